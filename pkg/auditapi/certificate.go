package auditapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

const (
	// APIServiceName is the APIService that registers this API.
	APIServiceName = "v1." + GroupName
	// CertificateLifetime is how long a certificate the scheduler makes is valid; it is renewed
	// when less than RenewBefore remains (checked every RecheckEvery).
	CertificateLifetime = 365 * 24 * time.Hour
	RenewBefore         = 30 * 24 * time.Hour
)

// ServingCertificate is a certificate and key kept in a Secret, and the CAs that verify it.
type ServingCertificate struct {
	CertPEM, KeyPEM, CAPEM []byte
}

// DNSNames are the names a certificate for the Service must carry: the ones the aggregator
// dials (service.namespace.svc) and the shorter ones in-cluster clients use, and localhost for a
// port-forward.
func DNSNames(namespace, service string) []string {
	return []string{service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace, service, "localhost"}
}

// EnsureCertificate returns the serving certificate kept in the Secret namespace/name, made or
// renewed first if it is missing, unreadable, not for the Service's names, or under RenewBefore
// from expiry. A renewed Secret's ca.crt keeps the previous CAs that have not expired, so a
// replica still serving the previous certificate stays verifiable. When two replicas race, the
// one whose write loses reads the winner's.
func EnsureCertificate(ctx context.Context, client kubernetes.Interface, namespace, name, service string, now time.Time) (*ServingCertificate, error) {
	secrets := client.CoreV1().Secrets(namespace)
	names := DNSNames(namespace, service)
	for attempt := 0; attempt < 3; attempt++ {
		existing, err := secrets.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			existing = nil
		case err != nil:
			return nil, fmt.Errorf("reading the certificate Secret %s/%s: %w", namespace, name, err)
		}
		var previousCAs []byte
		if existing != nil {
			kept := fromSecret(existing)
			problem := kept.problem(names, now)
			if problem == nil {
				return kept, nil
			}
			klog.FromContext(ctx).Info("Making a new audit API certificate", "secret", namespace+"/"+name, "reason", problem.Error())
			previousCAs = unexpiredCertificates(kept.CAPEM, now)
		}
		made, err := newServingCertificate(names)
		if err != nil {
			return nil, err
		}
		made.CAPEM = append(made.CAPEM, previousCAs...)
		secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "repute-scheduler"}},
			Type: v1.SecretTypeTLS,
			Data: map[string][]byte{v1.TLSCertKey: made.CertPEM, v1.TLSPrivateKeyKey: made.KeyPEM, "ca.crt": made.CAPEM}}
		if existing == nil {
			_, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
		} else {
			secret.ResourceVersion = existing.ResourceVersion
			_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{})
		}
		switch {
		case err == nil:
			return made, nil
		case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err):
			continue // another replica wrote it first: read theirs
		default:
			return nil, fmt.Errorf("writing the certificate Secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, fmt.Errorf("the certificate Secret %s/%s kept changing under us", namespace, name)
}

func fromSecret(s *v1.Secret) *ServingCertificate {
	return &ServingCertificate{CertPEM: s.Data[v1.TLSCertKey], KeyPEM: s.Data[v1.TLSPrivateKeyKey], CAPEM: s.Data["ca.crt"]}
}

// problem says why a kept certificate cannot be served as it is, or nil.
func (c *ServingCertificate) problem(names []string, now time.Time) error {
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return fmt.Errorf("certificate and key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	if leaf.NotAfter.Sub(now) < RenewBefore {
		return fmt.Errorf("it expires %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.CAPEM) {
		return errors.New("ca.crt holds no certificate")
	}
	for _, name := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: now}); err != nil {
			return fmt.Errorf("for %s: %w", name, err)
		}
	}
	return nil
}

// newServingCertificate makes a CA of its own and a certificate it signs for names and
// 127.0.0.1, valid CertificateLifetime from now, with client-go's generator (as kube-apiserver
// makes its self-signed serving certificate). The CA's key is not kept: renewal makes a new CA.
func newServingCertificate(names []string) (*ServingCertificate, error) {
	chain, key, err := certutil.GenerateSelfSignedCertKeyWithOptions(certutil.SelfSignedCertKeyOptions{Host: names[0],
		AlternateIPs: []net.IP{net.ParseIP("127.0.0.1")}, AlternateDNS: names[1:], MaxAge: CertificateLifetime})
	if err != nil {
		return nil, err
	}
	certs, err := certutil.ParseCertsPEM(chain) // the certificate, then the CA that signed it
	if err != nil || len(certs) != 2 {
		return nil, fmt.Errorf("a generated certificate chain of %d certificates (%v), want 2", len(certs), err)
	}
	return &ServingCertificate{CertPEM: chain, KeyPEM: key,
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: certs[1].Raw})}, nil
}

// unexpiredCertificates are the PEM certificates in bundle still valid at now; the rest,
// and anything unreadable, is dropped.
func unexpiredCertificates(bundle []byte, now time.Time) []byte {
	certs, err := certutil.ParseCertsPEM(bundle)
	if err != nil {
		return nil
	}
	var out bytes.Buffer
	for _, c := range certs {
		if now.Before(c.NotAfter) {
			_ = pem.Encode(&out, &pem.Block{Type: certutil.CertificateBlockType, Bytes: c.Raw})
		}
	}
	return out.Bytes()
}

// PublishCABundle sets the APIService's caBundle to caPEM, so the kube-apiserver verifies the
// scheduler's certificate (and turns insecureSkipTLSVerify off, which a caBundle excludes).
// Nothing else of the APIService is touched: the scheduler may patch only this one.
func PublishCABundle(ctx context.Context, client kubernetes.Interface, caPEM []byte) error {
	current, err := client.Discovery().RESTClient().Get().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices", APIServiceName).
		SetHeader("Accept", "application/json").Do(ctx).Raw() // the client may ask for protobuf
	if err != nil {
		return fmt.Errorf("reading the APIService %s: %w", APIServiceName, err)
	}
	var apiService struct {
		Spec struct {
			CABundle              []byte `json:"caBundle"`
			InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(current, &apiService); err != nil {
		return fmt.Errorf("reading the APIService %s: %w", APIServiceName, err)
	}
	if slices.Equal(apiService.Spec.CABundle, caPEM) && !apiService.Spec.InsecureSkipTLSVerify {
		return nil
	}
	patch := fmt.Sprintf(`{"spec":{"caBundle":%q,"insecureSkipTLSVerify":false}}`, base64.StdEncoding.EncodeToString(caPEM))
	if err := client.Discovery().RESTClient().Patch(types.MergePatchType).AbsPath("/apis/apiregistration.k8s.io/v1/apiservices", APIServiceName).
		SetHeader("Accept", "application/json").Body([]byte(patch)).Do(ctx).Error(); err != nil {
		return fmt.Errorf("setting the caBundle of the APIService %s: %w", APIServiceName, err)
	}
	return nil
}

// KeepOptions say where the certificate is kept and whether the APIService is to verify it.
type KeepOptions struct {
	// Namespace and Name are the Secret's; Service the Service the certificate names.
	Namespace, Name, Service string
	// PublishCABundle puts the CA in the APIService's caBundle.
	PublishCABundle bool
}

// RecheckEvery is how often a running scheduler reads the kept certificate again: to renew it
// before it expires, to serve the one the other replica renewed, and to put the CA back in the
// APIService if something took it out.
const RecheckEvery = time.Hour

// KeepCertificate writes the kept certificate to files in a private directory, for both APIs
// to serve (they reload the files when they change), and, if asked, publishes its CA to the
// APIService; then, every RecheckEvery, it does so again, so a certificate is renewed while the
// scheduler runs. If the Secret cannot be read or written (RBAC, the apiserver away), it serves
// a certificate of its own meanwhile, logs why, and keeps trying with backoff: the audit APIs
// must not keep the scheduler from starting.
func KeepCertificate(ctx context.Context, client kubernetes.Interface, opts KeepOptions) (certFile, keyFile string, err error) {
	dir, err := os.MkdirTemp("", "repute-audit-certificate-")
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	k := &keeper{client: client, opts: opts, certFile: certFile, keyFile: keyFile, now: time.Now,
		logger: klog.FromContext(ctx).WithValues("secret", opts.Namespace+"/"+opts.Name)}
	if err := k.keep(ctx); err != nil && k.served != nil { // kept and served; the CA is published later
		k.logger.Error(err, "Publishing the audit APIs' CA; trying again")
	} else if err != nil {
		k.logger.Error(err, "The audit APIs' certificate is not kept yet; serving one of this process's own meanwhile")
		own, err := newServingCertificate(DNSNames(opts.Namespace, opts.Service))
		if err != nil {
			return "", "", err
		}
		if err := writeCertificate(own, certFile, keyFile); err != nil {
			return "", "", err
		}
	}
	go func() {
		defer os.RemoveAll(dir)
		// Every RecheckEvery, keep it again; a failure is retried with backoff until it works.
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			_ = retryBackoff.DelayFunc().Until(ctx, false, false, func(ctx context.Context) (bool, error) {
				if err := k.keep(ctx); err != nil {
					k.logger.Error(err, "Keeping the audit APIs' certificate; trying again")
					return false, nil
				}
				return true, nil
			})
		}, RecheckEvery)
	}()
	return certFile, keyFile, nil
}

// keeper keeps one certificate in its Secret, its files and the APIService.
type keeper struct {
	client            kubernetes.Interface
	opts              KeepOptions
	certFile, keyFile string
	now               func() time.Time
	logger            klog.Logger
	// served is the certificate in the files, published the CAs last put in the APIService.
	served, published []byte
}

// keep makes sure the Secret holds a certificate good for a while yet, that the files hold the
// same, and that the APIService verifies by its CAs; it touches only what differs.
func (k *keeper) keep(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cert, err := EnsureCertificate(ctx, k.client, k.opts.Namespace, k.opts.Name, k.opts.Service, k.now())
	if err != nil {
		return err
	}
	if !bytes.Equal(cert.CertPEM, k.served) {
		if err := writeCertificate(cert, k.certFile, k.keyFile); err != nil {
			return err
		}
		if k.served != nil {
			k.logger.Info("Serving the renewed audit APIs' certificate")
		}
		k.served = cert.CertPEM
	}
	if k.opts.PublishCABundle {
		if err := PublishCABundle(ctx, k.client, cert.CAPEM); err != nil {
			return err
		}
		if !bytes.Equal(cert.CAPEM, k.published) {
			k.logger.Info("The APIService verifies the audit APIs' certificate", "apiService", APIServiceName)
			k.published = cert.CAPEM
		}
	}
	return nil
}

// writeCertificate replaces the files whole (write, then rename), so a server reloading them
// never reads half of one.
func writeCertificate(cert *ServingCertificate, certFile, keyFile string) error {
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, cert.KeyPEM}, {certFile, cert.CertPEM}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, f.path); err != nil {
			return err
		}
	}
	return nil
}
