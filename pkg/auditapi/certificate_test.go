package auditapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// verifies says whether cert is good for every name of the Service, by the CAs in bundle, at now.
func verifies(t *testing.T, certPEM, bundle []byte, now time.Time) error {
	t.Helper()
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	for _, name := range DNSNames("kube-system", "repute-audit") {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: now}); err != nil {
			return err
		}
	}
	return nil
}

func TestEnsureCertificate(t *testing.T) {
	ctx := context.Background()
	start := time.Now() // certificates are made valid from the clock's now
	ensure := func(client *fake.Clientset, service string, now time.Time) *ServingCertificate {
		t.Helper()
		c, err := EnsureCertificate(ctx, client, "kube-system", "repute-audit-tls", service, now)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	kept := func(client *fake.Clientset) *v1.Secret {
		t.Helper()
		s, err := client.CoreV1().Secrets("kube-system").Get(ctx, "repute-audit-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("made at the first start, kept after", func(t *testing.T) {
		client := fake.NewClientset()
		first := ensure(client, "repute-audit", start)
		if s := kept(client); s.Type != v1.SecretTypeTLS || !bytes.Equal(s.Data["tls.crt"], first.CertPEM) || !bytes.Equal(s.Data["ca.crt"], first.CAPEM) {
			t.Fatalf("Secret %s with %v, want a kubernetes.io/tls Secret holding the certificate and its CA", s.Type, s.Data)
		}
		if err := verifies(t, first.CertPEM, first.CAPEM, start); err != nil {
			t.Fatalf("the certificate does not verify by its CA: %v", err)
		}
		if again := ensure(client, "repute-audit", start.Add(24*time.Hour)); !bytes.Equal(again.CertPEM, first.CertPEM) {
			t.Error("a valid kept certificate was replaced")
		}
	})
	t.Run("renewed when under 30 days remain, the previous CA kept", func(t *testing.T) {
		client := fake.NewClientset()
		first := ensure(client, "repute-audit", start)
		later := start.Add(CertificateLifetime - 20*24*time.Hour)
		renewed := ensure(client, "repute-audit", later)
		if bytes.Equal(renewed.CertPEM, first.CertPEM) {
			t.Fatal("a certificate 20 days from expiry was kept")
		}
		if cas, _ := certutil.ParseCertsPEM(renewed.CAPEM); len(cas) != 2 {
			t.Errorf("ca.crt holds %d CAs, want the new and the previous", len(cas))
		}
		for name, cert := range map[string][]byte{"renewed": renewed.CertPEM, "previous": first.CertPEM} {
			if err := verifies(t, cert, renewed.CAPEM, later); err != nil {
				t.Errorf("the %s certificate does not verify by the new ca.crt: %v", name, err)
			}
		}
	})
	t.Run("replaced when unreadable or for another Service", func(t *testing.T) {
		for name, secret := range map[string]map[string][]byte{
			"garbage":        {"tls.crt": []byte("not a certificate"), "tls.key": []byte("nor a key")},
			"another's cert": nil, // filled below
		} {
			client := fake.NewClientset()
			if secret == nil {
				other := ensure(client, "someone-else", start)
				secret = map[string][]byte{"tls.crt": other.CertPEM, "tls.key": other.KeyPEM, "ca.crt": other.CAPEM}
				_ = client.CoreV1().Secrets("kube-system").Delete(ctx, "repute-audit-tls", metav1.DeleteOptions{})
			}
			if _, err := client.CoreV1().Secrets("kube-system").Create(ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "repute-audit-tls", Namespace: "kube-system"},
				Data: secret}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			got := ensure(client, "repute-audit", start)
			if err := verifies(t, got.CertPEM, got.CAPEM, start); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if !bytes.Equal(kept(client).Data["tls.crt"], got.CertPEM) {
				t.Errorf("%s: the Secret was not rewritten", name)
			}
		}
	})
	t.Run("two replicas at once: the loser serves the winner's", func(t *testing.T) {
		client := fake.NewClientset()
		winner := &ServingCertificate{}
		raced := false
		client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			if raced {
				return false, nil, nil
			}
			raced = true
			w, err := newServingCertificate(DNSNames("kube-system", "repute-audit")) // the other replica's, written first
			if err != nil {
				t.Fatal(err)
			}
			*winner = *w
			if err := client.Tracker().Add(&v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "repute-audit-tls", Namespace: "kube-system"}, Type: v1.SecretTypeTLS,
				Data: map[string][]byte{"tls.crt": w.CertPEM, "tls.key": w.KeyPEM, "ca.crt": w.CAPEM}}); err != nil {
				t.Fatal(err)
			}
			return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, "repute-audit-tls")
		})
		got := ensure(client, "repute-audit", start)
		if !raced || !bytes.Equal(got.CertPEM, winner.CertPEM) {
			t.Error("the replica that lost the race did not take the winner's certificate")
		}
	})
}

// A running scheduler renews the certificate when it comes due, and serves the one the other
// replica renewed: the files always hold what the Secret holds.
func TestKeeperRenewsWhileRunning(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now() // certificates are made valid from the clock's now
	client := fake.NewClientset()
	k := &keeper{client: client, opts: KeepOptions{Namespace: "kube-system", Name: "repute-audit-tls", Service: "repute-audit"},
		certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), now: func() time.Time { return now }, logger: klog.Background()}
	served := func() []byte {
		t.Helper()
		b, err := os.ReadFile(k.certFile)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	inSecret := func() []byte {
		t.Helper()
		s, err := client.CoreV1().Secrets("kube-system").Get(ctx, "repute-audit-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Data["tls.crt"]
	}
	if err := k.keep(ctx); err != nil {
		t.Fatal(err)
	}
	first := served()
	if !bytes.Equal(first, inSecret()) {
		t.Fatal("the files do not hold the kept certificate")
	}

	now = now.Add(CertificateLifetime - 10*24*time.Hour) // due
	if err := k.keep(ctx); err != nil {
		t.Fatal(err)
	}
	if renewed := served(); bytes.Equal(renewed, first) || !bytes.Equal(renewed, inSecret()) {
		t.Fatal("a certificate 10 days from expiry was not renewed and served")
	}

	now = time.Now()                                                             // certificates are made valid from the clock's now
	other, err := newServingCertificate(DNSNames("kube-system", "repute-audit")) // the other replica renewed
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets("kube-system").Update(ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "repute-audit-tls", Namespace: "kube-system"},
		Type: v1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": other.CertPEM, "tls.key": other.KeyPEM, "ca.crt": other.CAPEM}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.keep(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(), other.CertPEM) {
		t.Error("the other replica's renewed certificate is not served")
	}
}

// withAPIServer is a fake clientset whose raw REST requests (the APIService's) go to a server.
type withAPIServer struct {
	kubernetes.Interface
	discovery discovery.DiscoveryInterfaces
}

func (c withAPIServer) Discovery() discovery.DiscoveryInterfaces { return c.discovery }

// When the Secret is kept but the APIService cannot be updated yet (it is applied after the
// scheduler starts, say), the kept certificate is served, not one of the process's own, and the
// CA is published once the APIService is there.
func TestKeptCertificateIsServedBeforeItsCAIsPublished(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var exists atomic.Bool
	var patched atomic.Int32
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !exists.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
			return
		}
		if r.Method == http.MethodPatch {
			patched.Add(1)
		}
		_, _ = w.Write([]byte(`{"spec":{}}`))
	}))
	defer apiserver.Close()
	rc, err := rest.RESTClientFor(&rest.Config{Host: apiserver.URL, ContentConfig: rest.ContentConfig{
		GroupVersion: &schema.GroupVersion{}, NegotiatedSerializer: scheme.Codecs.WithoutConversion()}})
	if err != nil {
		t.Fatal(err)
	}
	secrets := fake.NewClientset()
	client := withAPIServer{Interface: secrets, discovery: discovery.NewDiscoveryClient(rc)}
	certFile, _, err := KeepCertificate(ctx, client, KeepOptions{Namespace: "kube-system", Name: "repute-audit-tls", Service: "repute-audit", PublishCABundle: true})
	if err != nil {
		t.Fatal(err)
	}
	served, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := secrets.CoreV1().Secrets("kube-system").Get(ctx, "repute-audit-tls", metav1.GetOptions{})
	if err != nil || !bytes.Equal(served, s.Data["tls.crt"]) {
		t.Fatalf("with the APIService missing, served a certificate other than the kept one (%v)", err)
	}
	exists.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for patched.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the CA was never published once the APIService existed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
