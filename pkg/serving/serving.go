// Package serving runs Repute's own HTTP endpoints (the Falco alert endpoint, the audit API)
// the same way: bounded headers and timeouts, TLS 1.2 or later, and a graceful stop when the
// scheduler's context ends.
package serving

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// Listen serves h on bindAddress, over TLS when tlsConfig is set, until ctx ends. It returns the
// bound address (useful with port 0) once the socket is listening.
func Listen(ctx context.Context, name, bindAddress string, tlsConfig *tls.Config, h http.Handler) (net.Addr, error) {
	ln, err := net.Listen("tcp", bindAddress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, BaseContext: func(net.Listener) context.Context { return ctx }}
	logger := klog.FromContext(ctx)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "Endpoint stopped", "endpoint", name)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return ln.Addr(), nil
}

// ServingCertificate loads the certificate and key files, or, when both are empty, makes a
// self-signed certificate for this process, as kube-scheduler does for its secure port. Clients
// then need the certificate itself to verify the server; production should mount a real one.
func ServingCertificate(certFile, keyFile string) (cert tls.Certificate, selfSigned bool, err error) {
	if certFile != "" || keyFile != "" {
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
		return cert, false, err
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return cert, true, err
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, true, err
}
