package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// writeCertificate writes a new certificate and key for 127.0.0.1 over the files and returns
// the certificate.
func writeCertificate(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Written beside and renamed into place, as a Secret volume's atomic writer does.
	for path, data := range map[string][]byte{keyFile: keyPEM, certFile: certPEM} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// servedCertificate opens a new connection and returns the certificate the server presents.
func servedCertificate(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the certificate itself
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// A rotated certificate is served on the next connection, with no restart.
func TestRotatedCertificateIsServed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeCertificate(t, certFile, keyFile)
	cfg, selfSigned, err := DynamicTLS(ctx, "test endpoint", TLSOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil || selfSigned {
		t.Fatalf("DynamicTLS = self-signed %v, %v", selfSigned, err)
	}
	addr, err := Listen(ctx, "test endpoint", "127.0.0.1:0", cfg, http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	if got := servedCertificate(t, addr.String()); !got.Equal(first) {
		t.Fatalf("served %s, want the first certificate %s", got.SerialNumber, first.SerialNumber)
	}
	second := writeCertificate(t, certFile, keyFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := servedCertificate(t, addr.String())
		if got.Equal(second) {
			return
		}
		if !got.Equal(first) {
			t.Fatalf("served %s, neither the first nor the rotated certificate", got.SerialNumber)
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was not served within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Files that cannot be read at start are an error, not a silently self-signed endpoint.
func TestUnreadableCertificateIsAnError(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := DynamicTLS(context.Background(), "test endpoint", TLSOptions{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: filepath.Join(dir, "missing.key")}); err == nil {
		t.Error("DynamicTLS accepted missing certificate files")
	}
}
