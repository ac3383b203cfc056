package behavior

import (
	"bytes"
	"testing"

	"github.com/repute-dev/repute/reputation"
)

// FuzzDecodeAlerts checks that no body makes the decoder panic, that every accepted alert has
// what Repute relies on, and that every alert is either accepted or refused, never both.
func FuzzDecodeAlerts(f *testing.F) {
	for _, name := range []string{"falco-alert.json", "falcosidekick-webhook.json", "host-event.json",
		"falco-docs-terminal-shell.json", "falcosidekick-test-event.json", "falcosidekick-client-test-input.json"} {
		b := readTestdata(f, name)
		f.Add(b)
		f.Add([]byte("[" + string(b) + "," + string(b) + "]"))
		f.Add([]byte(string(b) + "\n" + string(b[:len(b)/2]) + "\n"))
	}
	f.Add([]byte(`{"rule":null,"priority":"Critical","time":"2026-11-22T10:00:00Z","output_fields":{"k8s.ns.name":"a","k8s.pod.name":"b"}}`))
	f.Add([]byte(`[{}, null, 1, "x", []]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		alerts, errs := DecodeAlerts(body)
		seen := map[int]bool{}
		for _, a := range alerts {
			// An alert names a pod wholly or not at all.
			if a.Rule == "" || len(a.Rule) > maxRuleLength || (a.Namespace == "") != (a.Pod == "") || a.Time.IsZero() {
				t.Fatalf("accepted an alert without what Repute relies on: %+v", a.Alert)
			}
			if p, ok := reputation.ParseFalcoPriority(a.Priority); !ok || p != a.Priority {
				t.Fatalf("accepted priority %q is not canonical", a.Priority)
			}
			seen[a.Index] = true
		}
		for _, e := range errs {
			if e.Err == nil || e.Err.Error() == "" {
				t.Fatalf("a refusal without a reason at %d", e.Index)
			}
			if seen[e.Index] {
				t.Fatalf("alert %d both accepted and refused", e.Index)
			}
		}
		if len(alerts)+len(errs) == 0 && len(bytes.TrimSpace(body)) > 0 {
			t.Fatalf("a non-empty body produced neither an alert nor an error: %q", body)
		}
	})
}
