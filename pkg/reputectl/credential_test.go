package reputectl

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/kubernetes/scheme"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"

	"github.com/repute-dev/repute/pkg/audit"
)

// seen is what one request showed the server.
type seen struct {
	path, authorization string
	clientCert          bool
}

// credentialServer plays both the apiserver (TokenRequest for ns/sa) and the audit API on one
// TLS listener, and records the credential each request carried.
func credentialServer(t *testing.T) (*httptest.Server, string, func() []seen) {
	t.Helper()
	var mu sync.Mutex
	var requests []seen
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, seen{r.URL.Path, r.Header.Get("Authorization"), len(r.TLS.PeerCertificates) > 0})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/api/v1/namespaces/ns/serviceaccounts/sa/token" {
			body, _ := io.ReadAll(r.Body)
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil) // kubeconfig clients send protobuf
			tr, ok := obj.(*authenticationv1.TokenRequest)
			if err != nil || !ok || len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != audit.Audience {
				http.Error(w, "want a TokenRequest for the one audience "+audit.Audience, http.StatusBadRequest)
				return
			}
			tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenRequest"
			tr.Status.Token = "audience-bound"
			_ = json.NewEncoder(w).Encode(tr)
			return
		}
		_, _ = w.Write([]byte(`{"items":[]}`))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, ca, func() []seen { mu.Lock(); defer mu.Unlock(); return append([]seen(nil), requests...) }
}

// userKubeconfig writes a kubeconfig whose apiserver is srv and whose user is user.
func userKubeconfig(t *testing.T, srv *httptest.Server, user *clientcmdapi.AuthInfo) string {
	t.Helper()
	return writeKubeconfig(t, &clientcmdapi.Cluster{Server: srv.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}, user, "")
}

// The audit API never sees the kubeconfig's apiserver token: it sees a client certificate, or a
// token issued for its own audience, or reputectl refuses before sending anything.
func TestAuditAPINeverSeesTheApiserverToken(t *testing.T) {
	const apiserverToken = "apiserver-token"
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("auditor", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		user      *clientcmdapi.AuthInfo
		flags     []string
		wantErr   string
		wantAudit seen // what the audit API's request carried, path aside
		wantCalls int  // requests in all, the TokenRequest included
	}{
		{name: "token only: refused before any request", user: &clientcmdapi.AuthInfo{Token: apiserverToken},
			wantErr: "--audit-token-file"},
		{name: "client certificate only, even beside a token", user: &clientcmdapi.AuthInfo{Token: apiserverToken, ClientCertificateData: certPEM, ClientKeyData: keyPEM},
			wantAudit: seen{clientCert: true}, wantCalls: 1},
		{name: "token file", user: &clientcmdapi.AuthInfo{Token: apiserverToken}, flags: []string{"--audit-token-file", tokenFile},
			wantAudit: seen{authorization: "Bearer from-file"}, wantCalls: 1},
		{name: "service account token minted for the audience", user: &clientcmdapi.AuthInfo{Token: apiserverToken}, flags: []string{"--audit-service-account", "ns/sa"},
			wantAudit: seen{authorization: "Bearer audience-bound"}, wantCalls: 2},
		{name: "missing token file", user: &clientcmdapi.AuthInfo{Token: apiserverToken}, flags: []string{"--audit-token-file", tokenFile + ".gone"},
			wantErr: "no such file"},
		{name: "bad service account", user: &clientcmdapi.AuthInfo{Token: apiserverToken}, flags: []string{"--audit-service-account", "sa"},
			wantErr: "want NAMESPACE/NAME"},
		{name: "both", user: &clientcmdapi.AuthInfo{Token: apiserverToken}, flags: []string{"--audit-service-account", "ns/sa", "--audit-token-file", tokenFile},
			wantErr: "pass one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ca, requests := credentialServer(t)
			args := append([]string{"--kubeconfig", userKubeconfig(t, srv, tt.user), "--audit-server", srv.URL, "--audit-ca", ca}, tt.flags...)
			_, _, err := run(t, append(args, "images")...)
			got := requests()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if len(got) != 0 {
					t.Fatalf("refused, yet sent %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantCalls {
				t.Fatalf("requests = %+v, want %d", got, tt.wantCalls)
			}
			for _, r := range got {
				if strings.HasPrefix(r.path, "/api/v1/") {
					continue // the apiserver's TokenRequest, with the apiserver's token
				}
				r.path = ""
				if r != tt.wantAudit {
					t.Errorf("the audit API saw %+v, want %+v", r, tt.wantAudit)
				}
				if strings.Contains(r.authorization, apiserverToken) {
					t.Errorf("the apiserver token reached the audit API")
				}
			}
		})
	}
}
