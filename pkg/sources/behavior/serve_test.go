package behavior

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/repute-dev/repute/reputation"
)

// testPKI is a CA that issues the endpoint's serving certificate and Falco's client certificate.
type testPKI struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "repute test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: t.TempDir(), caCert: cert, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(cert)
	writePEM(t, filepath.Join(p.dir, "ca.crt"), "CERTIFICATE", der)
	return p
}

// issue writes a leaf certificate and key for the given usage and returns their paths.
func (p *testPKI) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Serve authenticates over real TLS on loopback: a client certificate from the configured CA,
// or the bearer token when one is configured too; a caller with neither gets nothing.
func TestServeAuthenticatesByClientCertificateOrToken(t *testing.T) {
	pki := newTestPKI(t)
	serverCert, serverKey := pki.issue(t, "repute", x509.ExtKeyUsageServerAuth)
	falcoCert, falcoKey := pki.issue(t, "falco", x509.ExtKeyUsageClientAuth)
	clientPair, err := tls.LoadX509KeyPair(falcoCert, falcoKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := newTestPKI(t)
	strangerCert, strangerKey := otherCA.issue(t, "stranger", x509.ExtKeyUsageClientAuth)
	strangerPair, err := tls.LoadX509KeyPair(strangerCert, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "serve-test-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	pods := func(ns, name string) (*v1.Pod, error) {
		if p := apiPod(); ns == p.Namespace && name == p.Name {
			return p, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
	}
	alert := readTestdata(t, "falco-alert.json")

	type client struct {
		name       string
		cert       *tls.Certificate
		token      string
		wantStatus int // 0: the TLS handshake itself must fail
	}
	tests := []struct {
		name      string
		withToken bool
		clients   []client
	}{
		{name: "mTLS only", clients: []client{
			{name: "Falco's certificate", cert: &clientPair, wantStatus: http.StatusOK},
			{name: "no certificate", wantStatus: 0},
			{name: "a certificate from another CA", cert: &strangerPair, wantStatus: 0},
		}},
		{name: "mTLS or token", withToken: true, clients: []client{
			{name: "Falco's certificate", cert: &clientPair, wantStatus: http.StatusOK},
			{name: "the token", token: token, wantStatus: http.StatusOK},
			{name: "neither", wantStatus: http.StatusUnauthorized},
			{name: "a wrong token", token: "wrong-token-0123456789", wantStatus: http.StatusUnauthorized},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ledger := reputation.NewBehaviorLedger()
			opts := ServerOptions{BindAddress: "127.0.0.1:0", TLSCertFile: serverCert, TLSKeyFile: serverKey,
				ClientCAFile: filepath.Join(pki.dir, "ca.crt"), MaxBodyBytes: DefaultMaxBodyBytes}
			if tt.withToken {
				opts.TokenFile = tokenFile
			}
			addr, err := Serve(ctx, opts, pods, &Recorder{Ledger: ledger})
			if err != nil {
				t.Fatal(err)
			}
			accepted := 0
			for _, c := range tt.clients {
				cfg := &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
				if c.cert != nil {
					cfg.Certificates = []tls.Certificate{*c.cert}
				}
				hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
				req, _ := http.NewRequest(http.MethodPost, "https://"+addr.String()+AlertsPath, bytes.NewReader(alert))
				if c.token != "" {
					req.Header.Set("Authorization", "Bearer "+c.token)
				}
				resp, err := hc.Do(req)
				if c.wantStatus == 0 {
					if err == nil {
						resp.Body.Close()
						t.Errorf("%s: got %d, want the handshake refused", c.name, resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != c.wantStatus {
					t.Errorf("%s: got %d, want %d", c.name, resp.StatusCode, c.wantStatus)
				}
				if resp.StatusCode == http.StatusOK {
					accepted++
				}
			}
			if got := len(ledger.Observations(time.Now(), digestApp)); (got > 0) != (accepted > 0) {
				t.Errorf("ledger holds %d observations after %d accepted requests", got, accepted)
			}
		})
	}
}

func TestServeRefusesAnEndpointWithoutAuthentication(t *testing.T) {
	_, err := Serve(context.Background(), ServerOptions{BindAddress: "127.0.0.1:0"}, nil, &Recorder{Ledger: reputation.NewBehaviorLedger()})
	if err == nil {
		t.Fatal("Serve started an endpoint that anyone could post to")
	}
}
