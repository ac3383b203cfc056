package audit

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// bearer adds a token to every request, as rest.HTTPClientFor does for a kubeconfig user.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func TestClientReadsEveryResource(t *testing.T) {
	s, _ := newTestServer(t)
	ts := httptest.NewTLSServer(s)
	defer ts.Close()
	client := func(token string) *Client {
		return &Client{HTTP: &http.Client{Transport: bearer{token, ts.Client().Transport}}, Server: ts.URL}
	}
	ctx := context.Background()
	auditor := client("auditor-token")

	images, err := auditor.Images(ctx, url.Values{"tier": {"untrusted"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(images.Items) != 2 || images.Items[0].Ref != mirrorRef || images.Items[1].Ref != minerRef {
		t.Errorf("untrusted images = %+v, want %s and %s", images.Items, mirrorRef, minerRef)
	}
	// A reference has slashes, a colon and an at sign; all survive the path.
	img, err := auditor.Image(ctx, apiRef)
	if err != nil || img.Ref != apiRef || img.Score != 90 {
		t.Errorf("Image(%s) = %+v, %v; want its score-90 verdict", apiRef, img, err)
	}

	var pods []string
	query := url.Values{"limit": {"7"}}
	for pages := 0; ; pages++ {
		list, err := auditor.Decisions(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list.Items {
			pods = append(pods, d.Pod)
		}
		if list.Continue == "" {
			if pages != 4 {
				t.Errorf("30 decisions came in %d pages of 7, want 5", pages+1)
			}
			break
		}
		query.Set("continue", list.Continue)
	}
	if len(pods) != 30 || pods[0] != "p00" || pods[29] != "p29" {
		t.Errorf("paged decisions = %v, want p00…p29 in order", pods)
	}

	var backup bytes.Buffer
	if n, err := auditor.Backup(ctx, &backup); err != nil || n == 0 || int64(backup.Len()) != n {
		t.Errorf("Backup = %d bytes, %v", n, err)
	}

	tests := []struct {
		name  string
		call  func() error
		check func(error) bool
	}{
		{"anonymous", func() error { _, err := client("").Images(ctx, nil); return err }, apierrors.IsUnauthorized},
		{"no role", func() error { _, err := client("nobody-token").Policies(ctx, nil); return err }, apierrors.IsForbidden},
		{"unknown image", func() error { _, err := auditor.Image(ctx, "quay.io/none/such:1"); return err }, apierrors.IsNotFound},
		{"bad parameter", func() error { _, err := auditor.Images(ctx, url.Values{"minScore": {"high"}}); return err }, apierrors.IsBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !tt.check(err) {
				t.Errorf("error = %v (%T)", err, err)
			}
		})
	}
}

// Offline, the store file answers through the same server: the same images, everything allowed.
func TestLocalClientAnswersFromTheStore(t *testing.T) {
	_, st := newTestServer(t)
	local := LocalClient(st)
	list, err := local.Images(context.Background(), url.Values{"registry": {"docker.io"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Ref != redisRef {
		t.Errorf("docker.io images = %+v, want only %s", list.Items, redisRef)
	}
	h, err := local.History(context.Background(), url.Values{"image": {apiRef}})
	if err != nil || len(h.Items) != 2 {
		t.Errorf("history = %+v, %v; want 2 entries", h, err)
	}
	if _, err := local.History(context.Background(), nil); !apierrors.IsBadRequest(err) {
		t.Errorf("history without image: %v, want a 400", err)
	}
}
