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

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
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

// TLSOptions say where an endpoint's certificate, key and client CA are; all optional.
type TLSOptions struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, verifies client certificates against these CAs; ClientAuth says
	// whether one is asked for or required.
	ClientCAFile string
	ClientAuth   tls.ClientAuthType
}

// DynamicTLS returns a TLS configuration whose serving certificate and client CA are re-read
// when their files change (watched, and checked every minute), through k8s.io/apiserver's
// dynamiccertificates as kube-apiserver serves its own: a new connection sees a rotated
// certificate with no restart. Without certificate files it serves a self-signed certificate
// for this process, as kube-scheduler does for its secure port; clients then need that
// certificate itself to verify the server, so production should mount a real one. Files that
// cannot be read at start are an error; later, a bad rotation keeps the previous certificate.
func DynamicTLS(ctx context.Context, name string, opts TLSOptions) (cfg *tls.Config, selfSigned bool, err error) {
	var servingCert dynamiccertificates.CertKeyContentProvider
	if opts.CertFile != "" || opts.KeyFile != "" {
		files, err := dynamiccertificates.NewDynamicServingContentFromFiles(name, opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, false, err
		}
		go files.Run(ctx, 1)
		servingCert = files
	} else {
		selfSigned = true
		if servingCert, err = selfSignedCertificate(name); err != nil {
			return nil, true, err
		}
	}
	var clientCA dynamiccertificates.CAContentProvider
	if opts.ClientCAFile != "" {
		file, err := dynamiccertificates.NewDynamicCAContentFromFile(name+" client CA", opts.ClientCAFile)
		if err != nil {
			return nil, selfSigned, err
		}
		go file.Run(ctx, 1)
		clientCA = file
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: opts.ClientAuth}
	controller := dynamiccertificates.NewDynamicServingCertificateController(base, clientCA, servingCert, nil, nil)
	servingCert.AddListener(controller)
	if clientCA != nil {
		clientCA.AddListener(controller)
	}
	if err := controller.RunOnce(); err != nil {
		return nil, selfSigned, err
	}
	go controller.Run(1, ctx.Done())
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: controller.GetConfigForClient}, selfSigned, nil
}

// selfSignedCertificate makes a certificate for this host and loopback.
func selfSignedCertificate(name string) (dynamiccertificates.CertKeyContentProvider, error) {
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	return dynamiccertificates.NewStaticCertKeyContent(name+" (self-signed)", certPEM, keyPEM)
}
