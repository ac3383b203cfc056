// Package behavior turns runtime evidence into reputation: Falco alerts posted to an
// authenticated HTTP endpoint, and crash loops, OOM kills and restarts read from pod status.
// Each observation is mapped to the image digest the container runs (through the pod's
// status.containerStatuses[].imageID) and filed in the engine's behavior ledger; the affected
// verdicts are then rescored from memory. Behavior can only lower a reputation.
package behavior

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/repute-dev/repute/reputation"
)

// Alert is what Repute takes from one Falco alert (Falco's json_output, or falcosidekick's
// webhook output, which is the same object with a uuid added).
type Alert struct {
	UUID     string
	Rule     string
	Priority string // canonical spelling, e.g. "Critical"
	Time     time.Time
	Hostname string
	// Namespace and Pod come from output_fields k8s.ns.name and k8s.pod.name.
	Namespace, Pod string
	// ContainerID is output_fields container.id: Falco's 12-character short ID (or the full one);
	// empty when Falco did not say.
	ContainerID string
}

// Limits on what one alert may carry, so that a hostile sender cannot grow the ledger.
const (
	maxRuleLength    = 256
	maxAlertsPerBody = 1000
)

// DecodeAlerts reads a request body holding one Falco alert, a JSON array of alerts, or one
// alert per line (NDJSON). Every alert is decoded on its own, so one bad alert costs only itself:
// the good ones are returned, and each bad one is reported by its position. A body that is not
// JSON at all is one error at position 0.
func DecodeAlerts(body []byte) ([]IndexedAlert, []ItemError) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, []ItemError{{Index: 0, Err: errors.New("empty body: want a Falco JSON alert, a JSON array of alerts, or one alert per line")}}
	}
	var raws []json.RawMessage
	var errs []ItemError
	switch {
	case body[0] == '[':
		raws, errs = splitArray(body)
	case json.Valid(body):
		raws = []json.RawMessage{body}
	default:
		raws, errs = splitLines(body)
	}
	if len(raws) == 0 && len(errs) == 0 {
		return nil, []ItemError{{Index: 0, Err: errors.New("no alerts in the body")}}
	}
	var alerts []IndexedAlert
	for i, raw := range raws {
		if raw == nil {
			continue // a line that was not JSON, already reported
		}
		if i >= maxAlertsPerBody {
			errs = append(errs, ItemError{Index: i, Err: fmt.Errorf("more than %d alerts in one body: the rest were not read", maxAlertsPerBody)})
			break
		}
		a, err := DecodeAlert(raw)
		if err != nil {
			errs = append(errs, ItemError{Index: i, Err: err})
			continue
		}
		alerts = append(alerts, IndexedAlert{Index: i, Alert: a})
	}
	return alerts, errs
}

// IndexedAlert is an alert and its position in the body.
type IndexedAlert struct {
	Index int
	Alert
}

// ItemError is why the alert at Index was refused.
type ItemError struct {
	Index int
	Err   error
}

func splitArray(body []byte) ([]json.RawMessage, []ItemError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // '['
		return nil, []ItemError{{Err: fmt.Errorf("malformed JSON: %w", err)}}
	}
	var raws []json.RawMessage
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			// The stream cannot be resynchronized inside an array: keep what came before.
			return raws, []ItemError{{Index: len(raws), Err: fmt.Errorf("malformed JSON at array element %d (elements after it were not read): %w", len(raws), err)}}
		}
		raws = append(raws, raw)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return raws, []ItemError{{Index: len(raws), Err: fmt.Errorf("malformed JSON after array element %d: %w", len(raws)-1, err)}}
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) > 0 {
		return raws, []ItemError{{Index: len(raws), Err: errors.New("malformed JSON: data after the closing ]")}}
	}
	return raws, nil
}

// splitLines reads NDJSON: each non-empty line is one alert, so a malformed line loses only itself.
func splitLines(body []byte) ([]json.RawMessage, []ItemError) {
	var raws []json.RawMessage
	var errs []ItemError
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, len(body)+1)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			var probe any
			err := json.Unmarshal(line, &probe)
			errs = append(errs, ItemError{Index: len(raws), Err: fmt.Errorf("malformed JSON on line %d: %w", len(raws)+1, err)})
			raws = append(raws, nil)
			continue
		}
		raws = append(raws, append(json.RawMessage(nil), line...))
	}
	return raws, errs
}

// DecodeAlert reads one alert and checks every field Repute relies on, naming the field that is
// missing, null or of the wrong type.
func DecodeAlert(raw []byte) (Alert, error) {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Alert{}, fmt.Errorf("malformed JSON: %w", err)
	}
	if obj == nil {
		return Alert{}, errors.New("alert is null: want a JSON object")
	}
	var a Alert
	var err error
	if a.Rule, err = requiredString(obj, "rule"); err != nil {
		return a, err
	}
	if len(a.Rule) > maxRuleLength {
		return a, fmt.Errorf("rule: longer than %d characters", maxRuleLength)
	}
	prio, err := requiredString(obj, "priority")
	if err != nil {
		return a, err
	}
	var ok bool
	if a.Priority, ok = reputation.ParseFalcoPriority(prio); !ok {
		return a, fmt.Errorf("priority: %q is not a Falco priority (%s)", prio, strings.Join(reputation.FalcoPriorities, ", "))
	}
	ts, err := requiredString(obj, "time")
	if err != nil {
		return a, err
	}
	if a.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return a, fmt.Errorf("time: %q is not an RFC 3339 time", ts)
	}
	a.UUID, _ = obj["uuid"].(string)
	a.Hostname, _ = obj["hostname"].(string)
	// An alert need not name a pod: host events, other sources (k8s_audit, plugins) and
	// falcosidekick's test event do not. It decodes, and the endpoint ignores it.
	fields := obj["output_fields"]
	if fields == nil {
		return a, nil
	}
	of, isObject := fields.(map[string]any)
	if !isObject {
		return a, fmt.Errorf("output_fields: want an object, got %s", jsonType(fields))
	}
	if a.Namespace, err = optionalString(of, "k8s.ns.name"); err != nil {
		return a, fmt.Errorf("output_fields.%w", err)
	}
	if a.Pod, err = optionalString(of, "k8s.pod.name"); err != nil {
		return a, fmt.Errorf("output_fields.%w", err)
	}
	if (a.Namespace == "") != (a.Pod == "") {
		return a, errors.New("output_fields: k8s.ns.name and k8s.pod.name come together: one without the other names no pod")
	}
	switch id := of["container.id"].(type) {
	case nil:
	case string:
		if id != "host" { // Falco's name for events outside any container
			a.ContainerID = id
		}
	default:
		return a, fmt.Errorf("output_fields.container.id: want a string, got %s", jsonType(id))
	}
	return a, nil
}

// NamesPod reports whether the alert names a pod (Falco's k8s.ns.name and k8s.pod.name).
func (a Alert) NamesPod() bool { return a.Namespace != "" && a.Pod != "" }

// optionalString reads a string field that may be absent or null (Falco writes null, and
// "<NA>" in its text output, for a field the event has no value for).
func optionalString(obj map[string]any, key string) (string, error) {
	switch v := obj[key].(type) {
	case nil:
		return "", nil
	case string:
		if v == "<NA>" {
			return "", nil
		}
		return v, nil
	default:
		return "", fmt.Errorf("%s: want a string, got %s", key, jsonType(v))
	}
}

func requiredString(obj map[string]any, key string) (string, error) {
	v, present := obj[key]
	switch {
	case !present:
		return "", fmt.Errorf("%s: required", key)
	case v == nil:
		return "", fmt.Errorf("%s: is null", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a string, got %s", key, jsonType(v))
	}
	if s == "" {
		return "", fmt.Errorf("%s: is empty", key)
	}
	return s, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

// event is the ledger's record of an alert seen in one container.
func (a Alert) event(where string) reputation.BehaviorEvent {
	return reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: a.Rule, Priority: a.Priority, Where: where, At: a.Time}
}
