package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// frontDoor stands where a cluster's load balancer stands: one loopback address that forwards
// TCP to whichever kube-apiserver is running. TLS passes through it untouched, so clients talk
// to the apiserver itself; what the front door keeps across restarts is the address, and the
// files that make every apiserver behind it present the same serving certificate and trust the
// same client CA.
type frontDoor struct {
	addr           string
	apiserverFlags []string

	mu       sync.Mutex
	listener net.Listener
	conns    map[net.Conn]struct{}
}

// newFrontDoor writes a serving certificate for 127.0.0.1, a client CA and an admin client
// certificate (system:masters) into dir, and reserves the address. It returns the admin's
// client configuration, which reaches the apiserver through the front door.
func newFrontDoor(dir string) (*frontDoor, *rest.Config, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	// Named as the apiserver names the pair it keeps in --cert-dir, so every apiserver started
	// with that directory serves this certificate (and trusts it from its peers).
	certFile, keyFile, err := ServingCertificate(dir)
	if err != nil {
		return nil, nil, err
	}
	servingCert := filepath.Join(dir, "apiserver.crt")
	if err := errors.Join(os.Rename(certFile, servingCert), os.Rename(keyFile, filepath.Join(dir, "apiserver.key"))); err != nil {
		return nil, nil, err
	}
	caFile := filepath.Join(dir, "client-ca.crt")
	adminCert, adminKey, err := adminCertificate(caFile)
	if err != nil {
		return nil, nil, err
	}
	addr, err := FreeLoopbackAddress()
	if err != nil {
		return nil, nil, err
	}
	servingPEM, err := os.ReadFile(servingCert)
	if err != nil {
		return nil, nil, err
	}
	f := &frontDoor{
		addr:  addr,
		conns: map[net.Conn]struct{}{},
		apiserverFlags: []string{
			"--cert-dir=" + dir,
			"--client-ca-file=" + caFile,
		},
	}
	admin := &rest.Config{
		Host:            "https://" + addr,
		TLSClientConfig: rest.TLSClientConfig{CAData: servingPEM, CertData: adminCert, KeyData: adminKey},
	}
	return f, admin, nil
}

// adminCertificate writes a client CA to caFile and returns a certificate it signed for a
// member of system:masters, with its key, both PEM.
func adminCertificate(caFile string) (certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ca, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "repute-test-client-ca"}, caKey)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "repute-test-admin", Organization: []string{"system:masters"}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// open listens on the front door's address and forwards every connection to backend, an
// apiserver URL.
func (f *frontDoor) open(backend string) error {
	u, err := url.Parse(backend)
	if err != nil {
		return err
	}
	host := u.Host
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("front door %s: %w", f.addr, err)
	}
	f.mu.Lock()
	f.listener = ln
	f.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go f.forward(client, host)
		}
	}()
	return nil
}

func (f *frontDoor) forward(client net.Conn, backend string) {
	server, err := net.Dial("tcp", backend)
	if err != nil {
		client.Close()
		return
	}
	if !f.track(client, server) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	f.untrack(client, server)
}

// track registers a connection pair, or closes it if the door was shut meanwhile.
func (f *frontDoor) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listener == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *frontDoor) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(f.conns, c)
	}
}

// shut stops listening and cuts every open connection, as a dying apiserver does.
func (f *frontDoor) shut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listener != nil {
		f.listener.Close()
		f.listener = nil
	}
	for c := range f.conns {
		c.Close()
		delete(f.conns, c)
	}
}
