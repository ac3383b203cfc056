package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/version"
)

// maxResponseBytes bounds a decoded answer: a full page of MaxPageSize explained verdicts is a
// few megabytes, so anything far larger is not this API.
const maxResponseBytes = 64 << 20

// Client reads the audit API. Errors the server sends come back as *apierrors.StatusError, so
// callers test them with apierrors.IsForbidden and friends, as with any Kubernetes API.
type Client struct {
	// HTTP carries the caller's credentials, e.g. from rest.HTTPClientFor.
	HTTP *http.Client
	// Server is the API's base URL, e.g. https://repute-audit.kube-system.svc:8444.
	Server string
}

// Images lists a page of images; query takes tier, registry, minScore, maxScore, limit, continue.
func (c *Client) Images(ctx context.Context, query url.Values) (*ImageList, error) {
	var out ImageList
	return &out, c.getJSON(ctx, ResourceImages, query, &out)
}

// Image gets one image's verdict by reference or digest.
func (c *Client) Image(ctx context.Context, name string) (*Image, error) {
	var out Image
	segments := strings.Split(name, "/")
	for i := range segments {
		segments[i] = url.PathEscape(segments[i])
	}
	return &out, c.getJSON(ctx, ResourceImages+"/"+strings.Join(segments, "/"), nil, &out)
}

// History reads a page of one image's verdict history; query needs image.
func (c *Client) History(ctx context.Context, query url.Values) (*History, error) {
	var out History
	return &out, c.getJSON(ctx, SubresourceHistory, query, &out)
}

// Decisions reads a page of placement decisions.
func (c *Client) Decisions(ctx context.Context, query url.Values) (*DecisionList, error) {
	var out DecisionList
	return &out, c.getJSON(ctx, ResourceDecisions, query, &out)
}

// Policies reads a page of the policies that were in force.
func (c *Client) Policies(ctx context.Context, query url.Values) (*PolicyList, error) {
	var out PolicyList
	return &out, c.getJSON(ctx, ResourcePolicies, query, &out)
}

// Backup streams a consistent copy of the store into w.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.get(ctx, "backup", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// Simulate asks what a proposed policy would change; nothing is applied.
func (c *Client) Simulate(ctx context.Context, proposed *v1alpha1.ReputationPolicy) (*Simulation, error) {
	body, err := json.Marshal(proposed)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, ResourceSimulations, nil, body)
	if err != nil {
		return nil, err
	}
	var out Simulation
	return &out, decodeBody(resp, ResourceSimulations, &out)
}

// Version asks which Repute serves the API.
func (c *Client) Version(ctx context.Context) (*version.Info, error) {
	var out version.Info
	resp, err := c.send(ctx, http.MethodGet, strings.TrimRight(c.Server, "/")+VersionPath, VersionPath, nil)
	if err != nil {
		return nil, err
	}
	return &out, decodeBody(resp, VersionPath, &out)
}

func (c *Client) getJSON(ctx context.Context, path string, query url.Values, out any) error {
	resp, err := c.get(ctx, path, query)
	if err != nil {
		return err
	}
	return decodeBody(resp, path, out)
}

func decodeBody(resp *http.Response, path string, out any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("reading the audit API's answer to %s: %w", path, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, path, query, nil)
}

// do sends a request and turns any answer but 200 into an error carrying the server's Status.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Response, error) {
	u := strings.TrimRight(c.Server, "/") + PathPrefix + "/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return c.send(ctx, method, u, path, body)
}

// send makes one request to a URL of the API; path names it in errors.
func (c *Client) send(ctx context.Context, method, u, path string, body []byte) (*http.Response, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, reader)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var status metav1.Status
	if json.Unmarshal(answer, &status) == nil && status.Kind == "Status" {
		return nil, &apierrors.StatusError{ErrStatus: status}
	}
	return nil, apierrors.NewGenericServerResponse(resp.StatusCode, method,
		schema.GroupResource{Group: Group, Resource: path}, "", strings.TrimSpace(string(answer)), 0, false)
}
