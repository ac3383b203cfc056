package behavior

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/repute-dev/repute/reputation"
)

const (
	digestApp     = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestSidecar = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	idApp         = "3ad7c1e44cb0" + "1111111111111111111111111111111111111111111111111111"
	idSidecar     = "9f00aa11bb22" + "2222222222222222222222222222222222222222222222222222"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// apiPod is the pod the testdata alerts name: an app container and a sidecar, running.
func apiPod() *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "api-7d9f"},
		Spec: v1.PodSpec{Containers: []v1.Container{
			{Name: "app", Image: "registry.internal/team/api:v1"},
			{Name: "proxy", Image: "registry.internal/mesh/proxy@" + digestSidecar},
		}},
		Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{
			{Name: "app", ImageID: "registry.internal/team/api@" + digestApp, ContainerID: "containerd://" + idApp},
			{Name: "proxy", ImageID: "sha256:cccc", ContainerID: "containerd://" + idSidecar},
		}},
	}
}

func TestDecodeAlerts(t *testing.T) {
	falco, sidekick, host := readTestdata(t, "falco-alert.json"), readTestdata(t, "falcosidekick-webhook.json"), readTestdata(t, "host-event.json")
	with := func(field, value string) []byte { // the Falco alert with one top-level field replaced
		var m map[string]any
		if err := json.Unmarshal(falco, &m); err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			t.Fatal(err)
		}
		m[field] = v
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name         string
		body         []byte
		wantAccepted []int    // positions decoded
		wantErrors   []string // one substring per refused alert, in order
	}{
		{"falco json_output", falco, []int{0}, nil},
		{"falcosidekick webhook", sidekick, []int{0}, nil},
		{"array", []byte("[" + string(falco) + "," + string(sidekick) + "]"), []int{0, 1}, nil},
		{"one per line, a bad line costs only itself", []byte(string(falco) + "\n{not json\n" + string(sidekick) + "\n"), []int{0, 2}, []string{"malformed JSON on line 2"}},
		{"pretty-printed single alert", prettyJSON(t, falco), []int{0}, nil},
		{"a host event decodes, naming no pod", host, []int{0}, nil},
		{"a namespace without a pod names no pod", with("output_fields", `{"k8s.ns.name":"team","k8s.pod.name":null}`), nil, []string{"k8s.ns.name and k8s.pod.name come together"}},
		{"a numeric pod name", with("output_fields", `{"k8s.ns.name":"team","k8s.pod.name":7}`), nil, []string{"output_fields.k8s.pod.name: want a string, got a number"}},
		{"null rule", with("rule", "null"), nil, []string{"rule: is null"}},
		{"numeric priority", with("priority", "3"), nil, []string{"priority: want a string, got a number"}},
		{"unknown priority", with("priority", `"Severe"`), nil, []string{`priority: "Severe" is not a Falco priority`}},
		{"lowercase priority is Falco's too", with("priority", `"critical"`), []int{0}, nil},
		{"bad time", with("time", `"yesterday"`), nil, []string{`time: "yesterday" is not an RFC 3339 time`}},
		{"output_fields null: names no pod", with("output_fields", "null"), []int{0}, nil},
		{"output_fields not an object", with("output_fields", "[]"), nil, []string{"output_fields: want an object, got an array"}},
		{"array element not an object", []byte(`[` + string(falco) + `, 7]`), []int{0}, []string{"malformed JSON"}},
		{"broken array keeps what came before", []byte(`[` + string(falco) + `, {"rule": ]`), []int{0}, []string{"malformed JSON at array element 1"}},
		{"null body", []byte("null"), nil, []string{"alert is null"}},
		{"empty body", []byte("  \n"), nil, []string{"empty body"}},
		{"not JSON", []byte("rule=shell priority=Critical"), nil, []string{"malformed JSON on line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alerts, errs := DecodeAlerts(tt.body)
			var got []int
			for _, a := range alerts {
				got = append(got, a.Index)
				if a.Rule == "" || a.Time.IsZero() {
					t.Errorf("accepted alert %d lacks a required field: %+v", a.Index, a.Alert)
				}
			}
			if !equalInts(got, tt.wantAccepted) {
				t.Errorf("accepted positions %v, want %v (errors %v)", got, tt.wantAccepted, errs)
			}
			if len(errs) != len(tt.wantErrors) {
				t.Fatalf("errors %v, want %d containing %q", errs, len(tt.wantErrors), tt.wantErrors)
			}
			for i, e := range errs {
				if !strings.Contains(e.Err.Error(), tt.wantErrors[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e.Err, tt.wantErrors[i])
				}
			}
		})
	}
	alerts, _ := DecodeAlerts(falco)
	if a := alerts[0].Alert; a.Priority != "Critical" || a.ContainerID != "3ad7c1e44cb0" || a.Rule != "Terminal shell in container" ||
		!a.Time.Equal(time.Date(2026, 11, 22, 10, 21, 30, 123456789, time.UTC)) {
		t.Errorf("decoded %+v", a)
	}
}

func prettyJSON(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTargetsOfAlert(t *testing.T) {
	tests := []struct {
		name        string
		containerID string
		wantKeys    [][]string
		wantErr     string
	}{
		{"short container id picks the container", "3ad7c1e44cb0", [][]string{{digestApp, "registry.internal/team/api:v1"}}, ""},
		{"full container id", idApp, [][]string{{digestApp, "registry.internal/team/api:v1"}}, ""},
		{"a config-ID imageID falls back to the pinned spec digest", "9f00aa11bb22", [][]string{{digestSidecar, "registry.internal/mesh/proxy@" + digestSidecar}}, ""},
		{"no container id: every container of the pod", "", [][]string{{digestApp, "registry.internal/team/api:v1"}, {digestSidecar, "registry.internal/mesh/proxy@" + digestSidecar}}, ""},
		{"an id of another container", "deadbeef0000", nil, "has no container with id deadbeef0000"},
		{"too short to be an id", "3ad", nil, "has no container with id 3ad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets, err := TargetsOfAlert(apiPod(), tt.containerID)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(targets) != len(tt.wantKeys) {
				t.Fatalf("targets %+v, want keys %v", targets, tt.wantKeys)
			}
			for i, target := range targets {
				if strings.Join(target.Keys, " ") != strings.Join(tt.wantKeys[i], " ") {
					t.Errorf("target %d keys %v, want %v", i, target.Keys, tt.wantKeys[i])
				}
			}
		})
	}
}

func TestPodStatusEvents(t *testing.T) {
	finished := metav1.NewTime(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	app := func(mutate func(*v1.ContainerStatus)) *v1.Pod {
		p := apiPod()
		mutate(&p.Status.ContainerStatuses[0])
		return p
	}
	crashLooping := func(s *v1.ContainerStatus) {
		s.State.Waiting = &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
		s.RestartCount = 3
	}
	oomKilled := func(s *v1.ContainerStatus) {
		s.LastTerminationState.Terminated = &v1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137, FinishedAt: finished, ContainerID: "containerd://old"}
		s.RestartCount = 1
	}
	tests := []struct {
		name     string
		old, pod *v1.Pod
		want     []reputation.BehaviorKind
	}{
		{"nothing happened", apiPod(), apiPod(), nil},
		{"enters a crash loop after restarts", app(func(s *v1.ContainerStatus) { s.RestartCount = 2 }), app(crashLooping),
			[]reputation.BehaviorKind{reputation.BehaviorCrashLoop, reputation.BehaviorRestart}},
		{"still crash looping is not counted again", app(crashLooping), app(crashLooping), nil},
		{"first seen crash looping (scheduler restart) counts the loop, not old restarts", nil, app(crashLooping), []reputation.BehaviorKind{reputation.BehaviorCrashLoop}},
		{"first seen with an old OOM kill: cannot be dated, not counted", nil, app(oomKilled), nil},
		{"OOM killed", apiPod(), app(oomKilled), []reputation.BehaviorKind{reputation.BehaviorOOMKilled, reputation.BehaviorRestart}},
		{"the same OOM kill seen again", app(oomKilled), app(oomKilled), nil},
		{"a restart burst counts at most 5", apiPod(), app(func(s *v1.ContainerStatus) { s.RestartCount = 40 }),
			[]reputation.BehaviorKind{reputation.BehaviorRestart, reputation.BehaviorRestart, reputation.BehaviorRestart, reputation.BehaviorRestart, reputation.BehaviorRestart}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []reputation.BehaviorKind
			for _, o := range PodStatusEvents(tt.old, tt.pod) {
				got = append(got, o.Event.Kind)
				if o.Target.Keys[0] != digestApp || !strings.Contains(o.Event.Where, "pod team/api-7d9f container app") {
					t.Errorf("event %+v filed under %v, want the app container's digest", o.Event, o.Target.Keys)
				}
				if o.Event.Kind == reputation.BehaviorOOMKilled && !o.Event.At.Equal(finished.Time) {
					t.Errorf("OOM kill dated %v, want its finishedAt %v", o.Event.At, finished.Time)
				}
			}
			if strings.Join(kinds(got), ",") != strings.Join(kinds(tt.want), ",") {
				t.Errorf("events %v, want %v", got, tt.want)
			}
		})
	}
}

func kinds(ks []reputation.BehaviorKind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return out
}

// ingestPods are the pods the ingest tests know: the testdata's api pod and the pod Falco's
// documented alert names, both placed by Repute, and one placed by another scheduler.
func ingestPods(ns, name string) (*v1.Pod, error) {
	kubecon := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubecon"},
		Spec:       v1.PodSpec{SchedulerName: "repute", Containers: []v1.Container{{Name: "shell", Image: "docker.io/library/alpine@" + digestApp}}},
		Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{
			{Name: "shell", ImageID: "docker.io/library/alpine@" + digestApp, ContainerID: "containerd://ee97d9c4186f" + strings.Repeat("0", 52)}}},
	}
	api := apiPod()
	api.Spec.SchedulerName = "repute"
	other := apiPod()
	other.Name, other.Spec.SchedulerName = "other-1234", "default-scheduler"
	for _, p := range []*v1.Pod{kubecon, api, other} {
		if p.Namespace == ns && p.Name == name {
			return p, nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func TestIngest(t *testing.T) {
	falco, sidekick := readTestdata(t, "falco-alert.json"), readTestdata(t, "falcosidekick-webhook.json")
	// From outside the project (testdata/README.md): Falco's documented alert, falcosidekick's
	// test event as its webhook posts it, and the payload falcosidekick's own tests use.
	docs, testEvent, sidekickTest := readTestdata(t, "falco-docs-terminal-shell.json"), readTestdata(t, "falcosidekick-test-event.json"), readTestdata(t, "falcosidekick-client-test-input.json")
	host := readTestdata(t, "host-event.json")
	unknownPod := bytes.Replace(sidekick, []byte(`"k8s.pod.name":"api-7d9f"`), []byte(`"k8s.pod.name":"gone-1234"`), 1)
	otherScheduler := bytes.Replace(sidekick, []byte(`"k8s.pod.name":"api-7d9f"`), []byte(`"k8s.pod.name":"other-1234"`), 1)
	unknownContainer := bytes.Replace(falco, []byte(`"container.id":"3ad7c1e44cb0"`), []byte(`"container.id":"0123456789ab"`), 1)
	const token = "0123456789abcdef-test-token"
	tests := []struct {
		name         string
		method, path string
		auth         string
		body         []byte
		wantStatus   int
		wantAccepted int
		// wantResults are the alerts not recorded, as "index result/reason", in order.
		wantResults  []string
		wantError    string
		wantRefused  string   // the reason a refused request is counted under
		wantRecorded []string // rules in the ledger under the app digest afterwards
		standby      bool
	}{
		{name: "no credentials", auth: "", body: falco, wantStatus: 401, wantError: "unauthenticated", wantRefused: ReasonUnauthenticated},
		{name: "wrong token", auth: "Bearer not-the-token-at-all", body: falco, wantStatus: 401, wantError: "unauthenticated", wantRefused: ReasonUnauthenticated},
		{name: "basic auth is not a bearer token", auth: "Basic " + token, body: falco, wantStatus: 401, wantRefused: ReasonUnauthenticated},
		{name: "unauthenticated callers learn nothing, not even paths", auth: "", path: "/other", body: falco, wantStatus: 401, wantRefused: ReasonUnauthenticated},
		{name: "unauthenticated, falcosidekick's test event gets nothing either", auth: "", body: testEvent, wantStatus: 401, wantRefused: ReasonUnauthenticated},
		{name: "wrong method", method: http.MethodGet, auth: "Bearer " + token, wantStatus: 405, wantRefused: ReasonMethodNotAllowed},
		{name: "wrong path", path: "/v1/alerts", auth: "Bearer " + token, body: falco, wantStatus: 404, wantRefused: ReasonNotFound},
		{name: "one Falco alert", auth: "Bearer " + token, body: falco, wantStatus: 200, wantAccepted: 1, wantRecorded: []string{"Terminal shell in container"}},
		{name: "Falco's documented json_output alert", auth: "Bearer " + token, body: docs, wantStatus: 200, wantAccepted: 1, wantRecorded: []string{"Terminal shell in container"}},
		{name: "falcosidekick's test event is ignored with 200", auth: "Bearer " + token, body: testEvent, wantStatus: 200, wantResults: []string{"0 ignored/no_pod"}},
		{name: "falcosidekick's own test payload is ignored with 200", auth: "Bearer " + token, body: sidekickTest, wantStatus: 200, wantResults: []string{"0 ignored/no_pod"}},
		{name: "a host event is ignored with 200", auth: "Bearer " + token, body: host, wantStatus: 200, wantResults: []string{"0 ignored/no_pod"}},
		{name: "another scheduler's pod is ignored: its behavior is no evidence", auth: "Bearer " + token, body: otherScheduler, wantStatus: 200,
			wantResults: []string{"0 ignored/not_placed_by_repute"}},
		{name: "a pod that is gone is ignored", auth: "Bearer " + token, body: unknownPod, wantStatus: 200, wantResults: []string{"0 ignored/pod_not_found"}},
		{name: "a container not in the pod's status is ignored", auth: "Bearer " + token, body: unknownContainer, wantStatus: 200, wantResults: []string{"0 ignored/container_not_found"}},
		{name: "a standby refuses alerts, to be sent again to the leader", auth: "Bearer " + token, body: falco, standby: true,
			wantStatus: 503, wantError: "standby", wantRefused: ReasonStandby},
		{name: "a standby tells unauthenticated callers nothing more", auth: "", body: falco, standby: true, wantStatus: 401, wantError: "unauthenticated", wantRefused: ReasonUnauthenticated},
		{name: "oversize body records nothing", auth: "Bearer " + token, body: append(append([]byte("["), falco...), bytes.Repeat([]byte(" "), 8192)...),
			wantStatus: 413, wantError: "body larger than 4096 bytes", wantRefused: ReasonTooLarge},
		{name: "malformed JSON is a 400", auth: "Bearer " + token, body: []byte(`{"rule":`), wantStatus: 400, wantResults: []string{"0 rejected/malformed"}},
		{name: "a batch of malformed alerts is a 400", auth: "Bearer " + token, body: []byte("{oops\n{\"rule\":7}\n"), wantStatus: 400,
			wantResults: []string{"0 rejected/malformed", "1 rejected/malformed"}},
		{name: "a mixed batch answers 200 and loses no valid alert", auth: "Bearer " + token,
			body:       []byte(string(unknownPod) + "\n{oops\n" + string(sidekick) + "\n" + string(testEvent) + "\n" + string(falco) + "\n"),
			wantStatus: 200, wantAccepted: 2, wantResults: []string{"0 ignored/pod_not_found", "1 rejected/malformed", "3 ignored/no_pod"},
			wantRecorded: []string{"Read sensitive file untrusted", "Terminal shell in container"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ledger := reputation.NewBehaviorLedger()
			var rescored [][]string
			counted := map[string]int{}
			var refused []string
			h := &Ingest{
				Pods: ingestPods,
				Recorder: &Recorder{Ledger: ledger, Rescore: func(keys []string) { rescored = append(rescored, keys) },
					Standby: func() bool { return tt.standby }},
				Counts:        func(p *v1.Pod) bool { return p.Spec.SchedulerName == "repute" },
				MaxBodyBytes:  4096,
				Authenticated: func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token },
				OnAlert:       func(result, reason string) { counted[result+"/"+reason]++ },
				OnRefused:     func(reason string) { refused = append(refused, reason) },
			}
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = AlertsPath
			}
			req := httptest.NewRequest(method, path, bytes.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			var resp IngestResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response is not JSON: %v: %s", err, rec.Body)
			}
			var results []string
			for _, r := range resp.Results {
				results = append(results, fmt.Sprintf("%d %s/%s", r.Index, r.Result, r.Reason))
				if r.Detail == "" {
					t.Errorf("result %+v says not why", r)
				}
			}
			if resp.Accepted != tt.wantAccepted || strings.Join(results, ",") != strings.Join(tt.wantResults, ",") || !strings.Contains(resp.Error, tt.wantError) {
				t.Fatalf("response %+v: results %q, want %d accepted, results %q, error %q", resp, results, tt.wantAccepted, tt.wantResults, tt.wantError)
			}
			if resp.Ignored+resp.Rejected != len(tt.wantResults) {
				t.Errorf("counts %d ignored + %d rejected, want %d", resp.Ignored, resp.Rejected, len(tt.wantResults))
			}
			// Metrics count every alert once, by the result the response gives it.
			want := map[string]int{}
			if tt.wantAccepted > 0 {
				want[ResultAccepted+"/"+ReasonRecorded] = tt.wantAccepted
			}
			for _, r := range tt.wantResults {
				want[strings.SplitN(r, " ", 2)[1]]++
			}
			if fmt.Sprint(counted) != fmt.Sprint(want) {
				t.Errorf("alerts counted %v, want %v", counted, want)
			}
			if tt.wantRefused != "" && (len(refused) != 1 || refused[0] != tt.wantRefused) || tt.wantRefused == "" && len(refused) != 0 {
				t.Errorf("refusals counted %q, want %q", refused, tt.wantRefused)
			}
			var rules []string
			for _, o := range ledger.Observations(time.Now(), digestApp) {
				rules = append(rules, o.Rule)
			}
			if strings.Join(rules, "|") != strings.Join(tt.wantRecorded, "|") {
				t.Errorf("ledger holds %q for the app digest, want %q", rules, tt.wantRecorded)
			}
			if (len(tt.wantRecorded) > 0) != (len(rescored) == 1) {
				t.Errorf("rescored %d times, want once per batch that recorded something", len(rescored))
			}
		})
	}
}

func TestTokenFileFollowsTheSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := NewTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tf.reloadEvery = 0
	bearer := func(tok string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, AlertsPath, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	if !tf.Valid(bearer("first-token-0123456789")) || tf.Valid(bearer("first-token")) {
		t.Fatal("the token must match exactly, trailing newline trimmed")
	}
	future := time.Now().Add(time.Minute)
	if err := os.WriteFile(path, []byte("second-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	if tf.Valid(bearer("first-token-0123456789")) || !tf.Valid(bearer("second-token-0123456789")) {
		t.Fatal("a rotated Secret must replace the token")
	}
	// Revoking the Secret revokes the token: emptied, shortened or deleted, the file refuses
	// even the token it used to hold.
	for _, revoke := range []struct {
		name string
		do   func() error
	}{
		{"emptied", func() error { return os.WriteFile(path, nil, 0o600) }},
		{"shortened", func() error { return os.WriteFile(path, []byte("short"), 0o600) }},
		{"deleted", func() error { return os.Remove(path) }},
	} {
		if err := os.WriteFile(path, []byte("second-token-0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		if !tf.Valid(bearer("second-token-0123456789")) {
			t.Fatalf("%s: the token was not accepted before its revocation", revoke.name)
		}
		if err := revoke.do(); err != nil {
			t.Fatal(err)
		}
		if tf.Valid(bearer("second-token-0123456789")) {
			t.Errorf("token file %s: the revoked token is still accepted", revoke.name)
		}
	}
	// A missing or guessable token refuses everyone, and the scheduler keeps running; the token
	// is picked up when the Secret appears.
	for _, tt := range []struct{ name, content, wantErr string }{
		{"missing", "", "no such file"},
		{"guessable", "x\n", "shorter than 16"},
	} {
		path := filepath.Join(t.TempDir(), "token")
		if tt.content != "" {
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		tf, err := NewTokenFile(path)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Fatalf("%s token file: error %v, want %q", tt.name, err, tt.wantErr)
		}
		tf.reloadEvery = 0
		for _, tok := range []string{"", "x", "Bearer"} {
			if tf.Valid(bearer(tok)) {
				t.Fatalf("%s token file accepted %q", tt.name, tok)
			}
		}
		if err := os.WriteFile(path, []byte("late-token-0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, future, future); err != nil {
			t.Fatal(err)
		}
		if !tf.Valid(bearer("late-token-0123456789")) {
			t.Fatalf("%s token file: the token written later was not picked up", tt.name)
		}
	}
}

// An alert for a container whose status has not reached the informer yet is looked up again
// within Settle, and then recorded, not refused.
func TestIngestWaitsForTheStatusToSettle(t *testing.T) {
	ledger := reputation.NewBehaviorLedger()
	var lookups atomic.Int32
	h := &Ingest{
		Pods: func(ns, name string) (*v1.Pod, error) {
			p := apiPod()
			if lookups.Add(1) < 3 { // the first lookups see the pod before its status
				p.Status.ContainerStatuses = nil
			}
			return p, nil
		},
		Recorder:      &Recorder{Ledger: ledger},
		Authenticated: func(*http.Request) bool { return true },
		Settle:        5 * time.Second,
	}
	req := httptest.NewRequest(http.MethodPost, AlertsPath, bytes.NewReader(readTestdata(t, "falco-alert.json")))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || lookups.Load() != 3 {
		t.Fatalf("status %d after %d lookups, want 200 after 3: %s", rec.Code, lookups.Load(), rec.Body)
	}
	if got := ledger.Observations(time.Now(), digestApp); len(got) != 1 {
		t.Errorf("ledger holds %d observations, want the alert", len(got))
	}
}
