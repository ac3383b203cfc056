package behavior

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/serving"
)

// AlertsPath is where Falco's http_output and falcosidekick's webhook output post alerts.
const AlertsPath = "/v1/falco"

// DefaultMaxBodyBytes caps an alert request body.
const DefaultMaxBodyBytes = 1 << 20

// PodGetter looks a pod up by namespace and name, from an informer cache.
type PodGetter func(namespace, name string) (*v1.Pod, error)

// Ingest is the HTTP handler that takes Falco alerts. Every request must be authenticated; its
// body is capped; each alert in it is decoded, mapped to the images of the pod it names and
// recorded on its own, so that a bad alert never costs a good one.
type Ingest struct {
	Pods         PodGetter
	Recorder     *Recorder
	MaxBodyBytes int64
	// Authenticated says whether a request carries valid credentials.
	Authenticated func(*http.Request) bool
	// Settle is how long an alert naming a pod or container Repute does not know yet is
	// looked up again before it is refused: Falco can report a container before its status
	// reaches the scheduler's informer.
	Settle time.Duration
}

// DefaultSettle is the Settle the endpoint runs with.
const DefaultSettle = 2 * time.Second

// IngestResponse is the JSON answer to every alert request.
type IngestResponse struct {
	// Accepted counts the alerts recorded.
	Accepted int `json:"accepted"`
	// Rejected lists each refused alert by its position in the body (0-based).
	Rejected []Rejection `json:"rejected,omitempty"`
	// Error is set when the request as a whole was refused.
	Error string `json:"error,omitempty"`
}

// Rejection is one refused alert.
type Rejection struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

func (h *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.Authenticated == nil || !h.Authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="repute"`)
		reply(w, http.StatusUnauthorized, IngestResponse{Error: "unauthenticated: send Authorization: Bearer <token>, or a client certificate signed by the configured CA"})
		return
	}
	if r.URL.Path != AlertsPath {
		reply(w, http.StatusNotFound, IngestResponse{Error: "not found: post alerts to " + AlertsPath})
		return
	}
	if h.Recorder.standingBy() {
		// 503 tells the sender to try again: the Service reaches the leader once it is elected.
		reply(w, http.StatusServiceUnavailable, IngestResponse{Error: "this replica is a standby; alerts go to the leader"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, IngestResponse{Error: "method not allowed: POST alerts"})
		return
	}
	limit := h.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			reply(w, http.StatusRequestEntityTooLarge, IngestResponse{Error: fmt.Sprintf("body larger than %d bytes: nothing was recorded; send fewer alerts per request", limit)})
			return
		}
		reply(w, http.StatusBadRequest, IngestResponse{Error: "reading body: " + err.Error()})
		return
	}
	alerts, decodeErrs := DecodeAlerts(body)
	resp := IngestResponse{}
	status := http.StatusOK
	for _, e := range decodeErrs {
		resp.Rejected = append(resp.Rejected, Rejection{Index: e.Index, Error: e.Err.Error()})
		status = http.StatusBadRequest
	}
	var batch []Observed
	deadline := time.Now().Add(h.Settle)
	for pending := alerts; ; {
		var unresolved []IndexedAlert
		var errs []error
		for _, a := range pending {
			obs, err := h.resolve(a.Alert)
			if err != nil {
				unresolved, errs = append(unresolved, a), append(errs, err)
				continue
			}
			batch = append(batch, obs...)
			resp.Accepted++
		}
		if len(unresolved) == 0 || !sleepUntil(r.Context(), deadline, settlePoll) {
			for i, a := range unresolved {
				resp.Rejected = append(resp.Rejected, Rejection{Index: a.Index, Error: errs[i].Error()})
				if status == http.StatusOK {
					status = http.StatusUnprocessableEntity
				}
			}
			break
		}
		pending = unresolved
	}
	h.Recorder.Record(batch)
	klog.FromContext(r.Context()).V(2).Info("Falco alerts received", "accepted", resp.Accepted, "rejected", len(resp.Rejected))
	reply(w, status, resp)
}

// settlePoll is how often unresolved alerts are looked up again within Settle.
const settlePoll = 100 * time.Millisecond

// sleepUntil waits one poll interval if that stays before the deadline and ctx lasts.
func sleepUntil(ctx context.Context, deadline time.Time, poll time.Duration) bool {
	if time.Now().Add(poll).After(deadline) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(poll):
		return true
	}
}

// resolve maps an alert to observations of the images in the pod it names.
func (h *Ingest) resolve(a Alert) ([]Observed, error) {
	pod, err := h.Pods(a.Namespace, a.Pod)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s not found: it is not running in this cluster (or is gone)", a.Namespace, a.Pod)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up pod %s/%s: %w", a.Namespace, a.Pod, err)
	}
	targets, err := TargetsOfAlert(pod, a.ContainerID)
	if err != nil {
		return nil, err
	}
	out := make([]Observed, 0, len(targets))
	for _, t := range targets {
		out = append(out, Observed{Target: t, Event: a.event(t.Where)})
	}
	return out, nil
}

func reply(w http.ResponseWriter, status int, resp IngestResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// TokenFile checks bearer tokens against a file, typically a Secret mounted as a volume. The
// file is re-read when it changes (checked at most every reloadEvery), so a rotated Secret
// takes effect without a restart.
type TokenFile struct {
	Path        string
	reloadEvery time.Duration

	mu      sync.Mutex
	token   []byte
	checked time.Time
	// modTime and size are the file's when token was read from it.
	modTime time.Time
	size    int64
}

// NewTokenFile reads the token once. A missing or unusable file does not stop the scheduler,
// whose placements matter more than this feed: every alert is refused (401) until the file
// holds a token, as when an optional Secret volume is created after the scheduler starts.
func NewTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{Path: path, reloadEvery: 10 * time.Second}
	return t, t.load(time.Now())
}

// load reads the token. A file that is gone, unreadable, emptied or shortened revokes the
// token it held: revoking a Secret must revoke the access it gave, so a failed read never keeps
// the previous token.
func (t *TokenFile) load(now time.Time) error {
	t.checked = now
	fi, err := os.Stat(t.Path)
	if err != nil {
		t.token, t.modTime = nil, time.Time{}
		return fmt.Errorf("falco token file: %w", err)
	}
	if fi.ModTime().Equal(t.modTime) && fi.Size() == t.size && t.token != nil {
		return nil
	}
	t.token, t.modTime = nil, time.Time{}
	b, err := os.ReadFile(t.Path)
	if err != nil {
		return fmt.Errorf("falco token file: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) < minTokenLength {
		return fmt.Errorf("falco token file %s: token shorter than %d characters", t.Path, minTokenLength)
	}
	t.token, t.modTime, t.size = tok, fi.ModTime(), fi.Size()
	return nil
}

// minTokenLength refuses guessable tokens.
const minTokenLength = 16

// Valid reports whether the request carries the bearer token. Without a token nothing is valid.
func (t *TokenFile) Valid(r *http.Request) bool {
	scheme, presented, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || presented == "" {
		return false
	}
	t.mu.Lock()
	if now := time.Now(); now.Sub(t.checked) > t.reloadEvery {
		if err := t.load(now); err != nil {
			klog.ErrorS(err, "Falco token not (re)loaded: every alert is refused until the file holds a token")
		}
	}
	token := t.token
	t.mu.Unlock()
	return token != nil && subtle.ConstantTimeCompare([]byte(presented), token) == 1
}

// ServerOptions configure the alert endpoint.
type ServerOptions struct {
	BindAddress string
	// TokenFile holds the bearer token senders must present.
	TokenFile string
	// TLSCertFile and TLSKeyFile serve HTTPS; ClientCAFile also accepts (or, without a token
	// file, requires) client certificates signed by that CA.
	TLSCertFile, TLSKeyFile, ClientCAFile string
	MaxBodyBytes                          int64
}

// Serve listens on opts.BindAddress and serves the ingest handler until ctx is done. It returns
// the bound address once listening (useful with port 0) and reports startup errors at once.
func Serve(ctx context.Context, opts ServerOptions, pods PodGetter, rec *Recorder) (net.Addr, error) {
	h := &Ingest{Pods: pods, Recorder: rec, MaxBodyBytes: opts.MaxBodyBytes, Settle: DefaultSettle}
	var checks []func(*http.Request) bool
	if opts.TokenFile != "" {
		tf, err := NewTokenFile(opts.TokenFile)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Every Falco alert is refused until the token file holds a token")
		}
		checks = append(checks, tf.Valid)
	}
	var tlsConfig *tls.Config
	if opts.TLSCertFile != "" {
		tlsOpts := serving.TLSOptions{CertFile: opts.TLSCertFile, KeyFile: opts.TLSKeyFile}
		if opts.ClientCAFile != "" {
			tlsOpts.ClientCAFile, tlsOpts.ClientAuth = opts.ClientCAFile, tls.VerifyClientCertIfGiven
			if opts.TokenFile == "" {
				tlsOpts.ClientAuth = tls.RequireAndVerifyClientCert
			}
			checks = append(checks, func(r *http.Request) bool { return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 })
		}
		var err error
		if tlsConfig, _, err = serving.DynamicTLS(ctx, "falco endpoint", tlsOpts); err != nil {
			return nil, fmt.Errorf("falco endpoint TLS: %w", err)
		}
	}
	if len(checks) == 0 {
		return nil, errors.New("falco endpoint: no authentication configured (tokenFile, or clientCAFile with TLS)")
	}
	h.Authenticated = func(r *http.Request) bool {
		for _, ok := range checks {
			if ok(r) {
				return true
			}
		}
		return false
	}
	addr, err := serving.Listen(ctx, "falco endpoint", opts.BindAddress, tlsConfig, h)
	if err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Falco alert endpoint listening", "address", addr.String(), "path", AlertsPath, "tls", tlsConfig != nil)
	return addr, nil
}
