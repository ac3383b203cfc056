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
	"slices"
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
//
// It answers as falcosidekick and Falco's http_output expect of an output that works: 2xx for
// every request it understood, since both count any other status as a failed output. An alert
// that is no evidence about a pod Repute placed (a host event, another event source, the
// sidekick's test event, a pod placed by another scheduler, a pod or container that is gone)
// is ignored, and the answer says which and why. Only an unauthenticated, oversized or
// wholly malformed request gets 4xx.
type Ingest struct {
	Pods     PodGetter
	Recorder *Recorder
	// Counts says whether a pod's behavior is evidence: the pods Repute placed. Nil counts every
	// pod.
	Counts       func(*v1.Pod) bool
	MaxBodyBytes int64
	// Authenticated says whether a request carries valid credentials.
	Authenticated func(*http.Request) bool
	// Settle is how long an alert naming a pod or container Repute does not know yet is
	// looked up again before it is ignored: Falco can report a container before its status
	// reaches the scheduler's informer.
	Settle time.Duration
	// OnAlert is told each alert's result (accepted, ignored, rejected) and reason, and
	// OnRefused each request refused as a whole and why, for metrics. Either may be nil.
	OnAlert   func(result, reason string)
	OnRefused func(reason string)
}

// DefaultSettle is the Settle the endpoint runs with.
const DefaultSettle = 2 * time.Second

// What became of an alert, and why. Reasons are metric label values: a short, fixed set.
const (
	ResultAccepted = "accepted"
	ResultIgnored  = "ignored"
	ResultRejected = "rejected"

	ReasonRecorded          = "recorded"
	ReasonNoPod             = "no_pod"               // a host event, another source, a test event
	ReasonPodNotFound       = "pod_not_found"        // gone, or never in this cluster
	ReasonContainerNotFound = "container_not_found"  // not in the pod's status
	ReasonNotPlacedByRepute = "not_placed_by_repute" // another scheduler's pod
	ReasonLookupFailed      = "lookup_failed"
	ReasonMalformed         = "malformed"
	ReasonUnauthenticated   = "unauthenticated"
	ReasonTooLarge          = "too_large"
	ReasonUnreadable        = "unreadable"
	ReasonMethodNotAllowed  = "method_not_allowed"
	ReasonNotFound          = "not_found"
	ReasonStandby           = "standby"
)

// AlertReasons lists every (result, reason) an alert can get, and RefusalReasons every reason
// a request is refused for: their metric series exist from the start.
var (
	AlertReasons = map[string][]string{
		ResultAccepted: {ReasonRecorded},
		ResultIgnored:  {ReasonNoPod, ReasonPodNotFound, ReasonContainerNotFound, ReasonNotPlacedByRepute, ReasonLookupFailed},
		ResultRejected: {ReasonMalformed},
	}
	RefusalReasons = []string{ReasonUnauthenticated, ReasonTooLarge, ReasonUnreadable, ReasonMethodNotAllowed, ReasonNotFound, ReasonStandby}
)

// IngestResponse is the JSON answer to every alert request.
type IngestResponse struct {
	// Accepted counts the alerts recorded, Ignored those that are no evidence, and Rejected
	// those that could not be read.
	Accepted int `json:"accepted"`
	Ignored  int `json:"ignored"`
	Rejected int `json:"rejected"`
	// Results says, for each alert that was not recorded, what became of it and why, by its
	// position in the body (0-based).
	Results []AlertResult `json:"results,omitempty"`
	// Error is set when the request as a whole was refused.
	Error string `json:"error,omitempty"`
}

// AlertResult is what became of one alert.
type AlertResult struct {
	Index  int    `json:"index"`
	Result string `json:"result"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// outcome is an alert's result once resolved: retry says it may resolve if looked up again.
type outcome struct {
	reason, detail string
	retry          bool
}

func (h *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, reason, msg string) {
		if h.OnRefused != nil {
			h.OnRefused(reason)
		}
		reply(w, status, IngestResponse{Error: msg})
	}
	if h.Authenticated == nil || !h.Authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="repute"`)
		refuse(http.StatusUnauthorized, ReasonUnauthenticated, "unauthenticated: send Authorization: Bearer <token>, or a client certificate signed by the configured CA")
		return
	}
	if r.URL.Path != AlertsPath {
		refuse(http.StatusNotFound, ReasonNotFound, "not found: post alerts to "+AlertsPath)
		return
	}
	if h.Recorder.standingBy() {
		// 503 tells the sender to try again: the Service reaches the leader once it is elected.
		refuse(http.StatusServiceUnavailable, ReasonStandby, "this replica is a standby; alerts go to the leader")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(http.StatusMethodNotAllowed, ReasonMethodNotAllowed, "method not allowed: POST alerts")
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
			refuse(http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Sprintf("body larger than %d bytes: nothing was recorded; send fewer alerts per request", limit))
			return
		}
		refuse(http.StatusBadRequest, ReasonUnreadable, "reading body: "+err.Error())
		return
	}
	alerts, decodeErrs := DecodeAlerts(body)
	resp := IngestResponse{}
	note := func(index int, result string, o outcome) {
		if h.OnAlert != nil {
			h.OnAlert(result, o.reason)
		}
		switch result {
		case ResultAccepted:
			resp.Accepted++
			return
		case ResultIgnored:
			resp.Ignored++
		case ResultRejected:
			resp.Rejected++
		}
		resp.Results = append(resp.Results, AlertResult{Index: index, Result: result, Reason: o.reason, Detail: o.detail})
	}
	for _, e := range decodeErrs {
		note(e.Index, ResultRejected, outcome{reason: ReasonMalformed, detail: e.Err.Error()})
	}
	var batch []Observed
	deadline := time.Now().Add(h.Settle)
	for pending := alerts; len(pending) > 0; {
		var unresolved []IndexedAlert
		var outcomes []outcome
		for _, a := range pending {
			obs, o := h.resolve(a.Alert)
			switch {
			case o.reason == ReasonRecorded:
				batch = append(batch, obs...)
				note(a.Index, ResultAccepted, o)
			case o.retry:
				unresolved, outcomes = append(unresolved, a), append(outcomes, o)
			default:
				note(a.Index, ResultIgnored, o)
			}
		}
		if len(unresolved) == 0 || !sleepUntil(r.Context(), deadline, settlePoll) {
			for i, a := range unresolved {
				note(a.Index, ResultIgnored, outcomes[i])
			}
			break
		}
		pending = unresolved
	}
	h.Recorder.Record(batch)
	slices.SortFunc(resp.Results, func(a, b AlertResult) int { return a.Index - b.Index })
	klog.FromContext(r.Context()).V(2).Info("Falco alerts received", "accepted", resp.Accepted, "ignored", resp.Ignored, "rejected", resp.Rejected)
	status := http.StatusOK
	if resp.Accepted+resp.Ignored == 0 {
		status = http.StatusBadRequest // nothing in it could be read
	}
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

// resolve maps an alert to observations of the images in the pod it names, or says why it is
// no evidence. A pod or container not known yet may be known once the informer catches up.
func (h *Ingest) resolve(a Alert) ([]Observed, outcome) {
	if !a.NamesPod() {
		return nil, outcome{reason: ReasonNoPod, detail: "the alert names no pod (a host event, another event source, or a test event)"}
	}
	pod, err := h.Pods(a.Namespace, a.Pod)
	if apierrors.IsNotFound(err) {
		return nil, outcome{reason: ReasonPodNotFound, retry: true, detail: fmt.Sprintf("pod %s/%s not found: it is not running in this cluster (or is gone)", a.Namespace, a.Pod)}
	}
	if err != nil {
		return nil, outcome{reason: ReasonLookupFailed, detail: fmt.Sprintf("looking up pod %s/%s: %v", a.Namespace, a.Pod, err)}
	}
	if h.Counts != nil && !h.Counts(pod) {
		return nil, outcome{reason: ReasonNotPlacedByRepute, detail: fmt.Sprintf("pod %s/%s is scheduled by %q, not by Repute: its behavior is no evidence about the images Repute places", a.Namespace, a.Pod, pod.Spec.SchedulerName)}
	}
	targets, err := TargetsOfAlert(pod, a.ContainerID)
	if err != nil {
		return nil, outcome{reason: ReasonContainerNotFound, retry: true, detail: err.Error()}
	}
	out := make([]Observed, 0, len(targets))
	for _, t := range targets {
		out = append(out, Observed{Target: t, Event: a.event(t.Where)})
	}
	return out, outcome{reason: ReasonRecorded}
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
	// Counts, OnAlert and OnRefused are the handler's (see Ingest).
	Counts    func(*v1.Pod) bool
	OnAlert   func(result, reason string)
	OnRefused func(reason string)
}

// Serve listens on opts.BindAddress and serves the ingest handler until ctx is done. It returns
// the bound address once listening (useful with port 0) and reports startup errors at once.
func Serve(ctx context.Context, opts ServerOptions, pods PodGetter, rec *Recorder) (net.Addr, error) {
	h := &Ingest{Pods: pods, Recorder: rec, MaxBodyBytes: opts.MaxBodyBytes, Settle: DefaultSettle,
		Counts: opts.Counts, OnAlert: opts.OnAlert, OnRefused: opts.OnRefused}
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
