package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/repute-dev/repute/reputation"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func verdict(image string, tier reputation.Tier, at time.Time) *reputation.Verdict {
	return &reputation.Verdict{Image: image, Key: image, Tier: tier, Score: 80, DecidedBy: "score", EvaluatedAt: at, PolicyVersion: "p-1"}
}

func gz(t *testing.T, text string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := &Shard{
		Verdicts: map[string]*reputation.Verdict{"reg/app:v1": verdict("reg/app:v1", reputation.TierTrusted, t0)},
		Behavior: []Behavior{{Keys: []string{"sha256:aa", "reg/app:v1"}, Event: reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: "shell", Priority: "Critical", At: t0}}},
	}
	data, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip (-want,+got):\n%s", diff)
	}
}

func TestDecodeRefusesWhatCannotBeUsed(t *testing.T) {
	tests := []struct {
		name, json string
		wantErr    string
	}{
		{"not json", `{"verdicts":`, "not valid JSON"},
		{"unknown field", `{"verdicts":{},"extra":1}`, "unknown field"},
		{"null verdict", `{"verdicts":{"a":null}}`, `verdicts["a"]: null`},
		{"filed under another image", `{"verdicts":{"a":{"image":"b","tier":"trusted"}}}`, `verdict is for image "b"`},
		{"no tier", `{"verdicts":{"a":{"image":"a","tier":"golden"}}}`, `"golden" is not a tier`},
		{"event without a time", `{"verdicts":{},"behavior":[{"keys":["k"],"event":{"Kind":"falco"}}]}`, "behavior[0]"},
		{"event without keys", `{"verdicts":{},"behavior":[{"keys":[],"event":{"At":"2026-01-01T00:00:00Z"}}]}`, "behavior[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(gz(t, tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decode = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Decode([]byte("plain")); err == nil || !strings.Contains(err.Error(), "not gzip") {
		t.Errorf("Decode(plain) = %v, want not gzip", err)
	}
	// A bomb: small compressed, larger than the bound decompressed.
	bomb := gz(t, `{"verdicts":{}}`+strings.Repeat(" ", MaxSnapshotBytes))
	if _, err := Decode(bomb); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Decode(bomb of %d bytes) = %v, want refused by size", len(bomb), err)
	}
}

func TestNewer(t *testing.T) {
	mirrored := verdict("a", reputation.TierTrusted, t0)
	provisional := reputation.Pending("a", time.Second, reputation.DefaultPolicy(), t0.Add(time.Hour))
	tests := []struct {
		name             string
		mirrored, cached *reputation.Verdict
		want             bool
	}{
		{"nothing cached", mirrored, nil, true},
		{"the same verdict", mirrored, mirrored, false},
		{"cached is older", mirrored, verdict("a", reputation.TierUnknown, t0.Add(-time.Minute)), true},
		{"cached is newer", mirrored, verdict("a", reputation.TierUnknown, t0.Add(time.Minute)), false},
		{"cached is provisional, even if later", mirrored, provisional, true},
		{"both provisional: the later wins", provisional, reputation.Pending("a", time.Second, reputation.DefaultPolicy(), t0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Newer(tt.mirrored, tt.cached); got != tt.want {
				t.Errorf("Newer = %v, want %v", got, tt.want)
			}
		})
	}
}

// A standby adopts what the leader writes; once it leads it writes what it publishes, starting
// from what it adopted, and stops adopting.
func TestFollowThenLead(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	leaderCache := reputation.NewCache()
	leader := New(client, "kube-system", leaderCache, func() time.Duration { return time.Hour })
	leader.Lead(ctx)

	standbyCache := reputation.NewCache()
	standby := New(client, "kube-system", standbyCache, func() time.Duration { return time.Hour })
	if err := standby.Follow(ctx); err != nil {
		t.Fatal(err)
	}

	trusted := verdict("reg/app:v1", reputation.TierTrusted, time.Now())
	leaderCache.Publish("reg/app:v1", trusted)
	alert := reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: "shell", Priority: "Warning", At: time.Now()}
	leader.RecordBehavior(alert, []string{"sha256:aa", "reg/app:v1"})
	waitFor(t, "the standby to adopt the leader's verdict", func() bool {
		v := standbyCache.Get("reg/app:v1")
		return v != nil && v.Tier == reputation.TierTrusted
	})
	waitFor(t, "the behavior to reach the standby", func() bool {
		standby.mu.Lock()
		defer standby.mu.Unlock()
		return len(standby.shards[ShardOf("sha256:aa")].Behavior) == 1
	})

	// The standby is elected: it hands back the behavior, and its own publications are written.
	events := standby.Lead(ctx)
	if len(events) != 1 || events[0].Event.Rule != "shell" {
		t.Fatalf("Lead returned %+v, want the one alert", events)
	}
	untrusted := verdict("reg/app:v1", reputation.TierUntrusted, time.Now())
	standbyCache.Publish("reg/app:v1", untrusted)
	standbyCache.Publish("reg/other:v2", verdict("reg/other:v2", reputation.TierUnknown, time.Now()))
	waitFor(t, "the new leader's verdicts in the cluster", func() bool {
		s := readShard(t, client, ShardOf("reg/app:v1"))
		o := readShard(t, client, ShardOf("reg/other:v2"))
		return s != nil && o != nil && s.Verdicts["reg/app:v1"].Tier == reputation.TierUntrusted && o.Verdicts["reg/other:v2"] != nil
	})
	// It kept what it had adopted: the behavior is still in its shard.
	if s := readShard(t, client, ShardOf("sha256:aa")); s == nil || len(s.Behavior) != 1 {
		t.Errorf("the new leader's write dropped the adopted behavior: %+v", s)
	}
}

// A write the apiserver refuses is retried, with backoff, until it lands; changes made
// meanwhile are in it.
func TestFailedWritesAreRetried(t *testing.T) {
	retryAfter, maxRetryAfter = time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { retryAfter, maxRetryAfter = time.Second, time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	var refused atomic.Int32
	client.PrependReactor("create", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		if refused.Add(1) <= 3 {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is busy"))
		}
		return false, nil, nil
	})
	cache := reputation.NewCache()
	m := New(client, "kube-system", cache, func() time.Duration { return time.Hour })
	m.Lead(ctx)
	cache.Publish("reg/app:v1", verdict("reg/app:v1", reputation.TierTrusted, time.Now()))
	waitFor(t, "the shard written after three refusals", func() bool {
		s := readShard(t, client, ShardOf("reg/app:v1"))
		return s != nil && s.Verdicts["reg/app:v1"] != nil
	})
	if n := refused.Load(); n < 4 {
		t.Errorf("%d create attempts, want the three refused and one more", n)
	}
}

// A noisy rule keeps only its newest MaxEventsPerRule events per image, as the ledger does; other
// rules and images keep theirs.
func TestRecordBehaviorIsBoundedLikeTheLedger(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(fake.NewClientset(), "kube-system", reputation.NewCache(), func() time.Duration { return 0 })
	m.Lead(ctx)
	keys := []string{"sha256:aa", "reg/app:v1"}
	now := time.Now()
	for n := range reputation.MaxEventsPerRule + 5 {
		m.RecordBehavior(reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: "noisy", At: now.Add(time.Duration(n) * time.Millisecond)}, keys)
	}
	m.RecordBehavior(reputation.BehaviorEvent{Kind: reputation.BehaviorFalcoAlert, Rule: "rare", At: now}, keys)
	m.mu.Lock()
	defer m.mu.Unlock()
	count := map[string]int{}
	var oldestNoisy time.Time
	for _, b := range m.shards[ShardOf(keys[0])].Behavior {
		count[b.Event.Rule]++
		if b.Event.Rule == "noisy" && (oldestNoisy.IsZero() || b.Event.At.Before(oldestNoisy)) {
			oldestNoisy = b.Event.At
		}
	}
	if count["noisy"] != reputation.MaxEventsPerRule || count["rare"] != 1 {
		t.Errorf("kept %v, want %d noisy and 1 rare", count, reputation.MaxEventsPerRule)
	}
	if want := now.Add(5 * time.Millisecond); !oldestNoisy.Equal(want) {
		t.Errorf("oldest noisy event kept is %s, want the newest %d (from %s)", oldestNoisy, reputation.MaxEventsPerRule, want)
	}
}

// A ConfigMap that does not decode changes nothing: the standby keeps what it had.
func TestFollowIgnoresAnUnreadableSnapshot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	image := "reg/app:v1"
	good, err := Encode(&Shard{Verdicts: map[string]*reputation.Verdict{image: verdict(image, reputation.TierTrusted, t0)}})
	if err != nil {
		t.Fatal(err)
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ShardName(ShardOf(image)), Namespace: "kube-system",
		Labels: map[string]string{ComponentLabel: componentValue}}, BinaryData: map[string][]byte{DataKey: good}}
	client := fake.NewClientset(cm)
	c := reputation.NewCache()
	if err := New(client, "kube-system", c, func() time.Duration { return 0 }).Follow(ctx); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(image); v == nil || v.Tier != reputation.TierTrusted {
		t.Fatalf("not adopted at start: %+v", v)
	}
	cm.BinaryData[DataKey] = gz(t, `{"verdicts":{"`+image+`":{"image":"`+image+`","tier":"golden"}}}`)
	if _, err := client.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A later, good shard: once it is adopted, the bad update before it has been handled too.
	other := "reg/other:v1"
	for ShardOf(other) == ShardOf(image) {
		other += "0"
	}
	next, err := Encode(&Shard{Verdicts: map[string]*reputation.Verdict{other: verdict(other, reputation.TierUnknown, t0)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ConfigMaps("kube-system").Create(ctx, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ShardName(ShardOf(other)),
		Namespace: "kube-system", Labels: cm.Labels}, BinaryData: map[string][]byte{DataKey: next}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the later shard", func() bool { return c.Get(other) != nil })
	if v := c.Get(image); v == nil || v.Tier != reputation.TierTrusted {
		t.Errorf("after an unreadable update the verdict is %+v, want the trusted one kept", v)
	}
}

func readShard(t *testing.T, client *fake.Clientset, i int) *Shard {
	cm, err := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), ShardName(i), metav1.GetOptions{})
	if err != nil {
		return nil
	}
	s, err := Decode(cm.BinaryData[DataKey])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func FuzzDecode(f *testing.F) {
	seed, _ := Encode(&Shard{Verdicts: map[string]*reputation.Verdict{"a": verdict("a", reputation.TierTrusted, t0)},
		Behavior: []Behavior{{Keys: []string{"k"}, Event: reputation.BehaviorEvent{Kind: "falco", At: t0}}}})
	f.Add(seed)
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever decodes is usable as it is, and encodes again.
		for image, v := range s.Verdicts {
			if v == nil || v.Image != image {
				t.Fatalf("accepted verdict %q: %+v", image, v)
			}
		}
		if _, err := Encode(s); err != nil {
			t.Fatalf("re-encoding an accepted shard: %v", err)
		}
	})
}

// BenchmarkEncodeShard encodes one shard of a 10,000-image snapshot, each verdict explained by
// four contributions as real ones are, and reports its stored size against the 1 MiB a
// ConfigMap may hold.
func BenchmarkEncodeShard(b *testing.B) {
	const images = 10000
	s := &Shard{Verdicts: map[string]*reputation.Verdict{}}
	for i := range images / Shards {
		// Digests are as random as real ones, so compression gets no help from them.
		image := fmt.Sprintf("registry.example.com/team-%d/app-%d@sha256:%x", i%50, i, sha256.Sum256([]byte(strconv.Itoa(i))))
		v := verdict(image, reputation.TierTrusted, t0)
		v.Contributions = []reputation.Contribution{
			{Signal: reputation.SignalOrigin, Observed: "registry registry.example.com, repository team/app", Points: 10, Rule: "origin.rules[0] registry.example.com/*"},
			{Signal: reputation.SignalSignature, Finding: "verified", Observed: "signed by key ops (cosign bundle)", Points: 30, Rule: "signature.verifiedWeight"},
			{Signal: reputation.SignalDependencies, Finding: "0 critical 2 high", Observed: "VulnerabilityReport team/replicaset-app: 0 critical, 2 high, 7 medium, 3 low", Points: -6, Rule: "dependencies.criticalWeight/highWeight"},
			{Signal: reputation.SignalBehavior, Observed: "no runtime alerts", Points: 0},
		}
		s.Verdicts[image] = v
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		data, err := Encode(s)
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size), "bytes/shard")
}

// Snapshot bounds: a short-name image (filed as pods spell it, its verdict naming the canonical
// reference) round-trips; an image too long to store never enters a shard; times from the
// future are clamped when a standby adopts them.
func TestSnapshotBounds(t *testing.T) {
	short := &Shard{Verdicts: map[string]*reputation.Verdict{"nginx:1.27": verdict("docker.io/library/nginx:1.27", reputation.TierUnknown, time.Now())}}
	data, err := Encode(short)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(data); err != nil {
		t.Errorf("a shard with a short-name image was refused: %v", err)
	}

	cache := reputation.NewCache()
	m := New(fake.NewClientset(), "kube-system", cache, func() time.Duration { return time.Hour })
	m.mu.Lock()
	m.leading = true // as after Lead, without the writer
	m.mu.Unlock()
	long := "registry.example/" + strings.Repeat("a", reputation.MaxImageRefLen)
	cache.Publish(long, verdict(long, reputation.TierUntrusted, time.Now()))
	if s := m.shards[ShardOf(long)]; s.Verdicts[long] != nil {
		t.Error("an image longer than MaxImageRefLen entered a shard")
	}

	standby := New(fake.NewClientset(), "kube-system", reputation.NewCache(), func() time.Duration { return time.Hour })
	future := time.Now().Add(365 * 24 * time.Hour)
	forged := &Shard{Verdicts: map[string]*reputation.Verdict{"reg/app:v1": verdict("reg/app:v1", reputation.TierTrusted, future)},
		Behavior: []Behavior{{Keys: []string{"sha256:aa"}, Event: reputation.BehaviorEvent{Rule: "r", At: future}}}}
	standby.adopt(ShardOf("reg/app:v1"), forged)
	if v := standby.cache.Get("reg/app:v1"); v == nil || v.EvaluatedAt.After(time.Now()) {
		t.Errorf("a verdict from the future was adopted as it was: %+v", v)
	}
	if forged.Behavior[0].Event.At.After(time.Now()) {
		t.Error("an event from the future kept its time")
	}
}

// With a key, a standby adopts only shards the leader signed: ConfigMap write in the namespace
// is not enough to forge a verdict, nor to replay one shard as another.
func TestSignedSnapshots(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := []byte(strings.Repeat("k", MinKeyBytes))
	client := fake.NewClientset()
	leaderCache := reputation.NewCache()
	leader := New(client, "kube-system", leaderCache, func() time.Duration { return time.Hour })
	leader.Key = key
	leader.Lead(ctx)
	leaderCache.Publish("reg/app:v1", verdict("reg/app:v1", reputation.TierUnknown, time.Now()))
	waitFor(t, "the signed shard", func() bool { return readShard(t, client, ShardOf("reg/app:v1")) != nil })

	// A forger writes a trusted verdict into another shard, without the key.
	forgedImage := "reg/forged:v1"
	if ShardOf(forgedImage) == ShardOf("reg/app:v1") {
		t.Fatal("the forged image must fall in another shard than the leader's")
	}
	data, err := Encode(&Shard{Verdicts: map[string]*reputation.Verdict{forgedImage: verdict(forgedImage, reputation.TierTrusted, time.Now())}})
	if err != nil {
		t.Fatal(err)
	}
	forged := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ShardName(ShardOf(forgedImage)), Namespace: "kube-system",
		Labels: map[string]string{ComponentLabel: componentValue}},
		BinaryData: map[string][]byte{DataKey: data, MACKey: []byte("not a mac")}}
	if _, err := client.CoreV1().ConfigMaps("kube-system").Create(ctx, forged, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	standbyCache := reputation.NewCache()
	standby := New(client, "kube-system", standbyCache, func() time.Duration { return time.Hour })
	standby.Key = key
	if err := standby.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	if standbyCache.Get("reg/app:v1") == nil {
		t.Error("the standby did not adopt the leader's signed shard")
	}
	if v := standbyCache.Get(forgedImage); v != nil {
		t.Errorf("the standby adopted a forged verdict: %+v", v)
	}
	if _, err := ReadKey(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing key file was accepted")
	}
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKey(short); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("a short key: %v, want a refusal", err)
	}
}

// A shard that would outgrow a ConfigMap leaves out its oldest verdicts and is written: the
// snapshot never stalls.
func TestAnOversizeShardDropsItsOldestVerdicts(t *testing.T) {
	defer func(old int) { MaxShardBytes = old }(MaxShardBytes)
	MaxShardBytes = 4 << 10
	m := New(fake.NewClientset(), "kube-system", reputation.NewCache(), func() time.Duration { return time.Hour })
	start := time.Now().Add(-time.Hour)
	newest := ""
	for i := range 400 {
		image := fmt.Sprintf("reg/app-%04d:%s", i, strings.Repeat("v", 40))
		m.shards[0].Verdicts[image] = verdict(image, reputation.TierTrusted, start.Add(time.Duration(i)*time.Second))
		newest = image
	}
	data, dropped, err := m.encodeFitting(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > MaxShardBytes || dropped == 0 {
		t.Fatalf("encoded %d bytes (limit %d), dropped %d", len(data), MaxShardBytes, dropped)
	}
	if m.shards[0].Verdicts[newest] == nil {
		t.Error("the newest verdict was dropped before older ones")
	}
}

// The leader drops a forgotten image from the snapshot, so standbys stop adopting it.
func TestForgetDropsTheVerdictFromTheSnapshot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	cache := reputation.NewCache()
	m := New(client, "kube-system", cache, func() time.Duration { return time.Hour })
	m.Lead(ctx)
	cache.Publish("reg/one-off:v1", verdict("reg/one-off:v1", reputation.TierUnknown, time.Now()))
	waitFor(t, "the verdict in the snapshot", func() bool {
		s := readShard(t, client, ShardOf("reg/one-off:v1"))
		return s != nil && s.Verdicts["reg/one-off:v1"] != nil
	})
	m.Forget("reg/one-off:v1")
	waitFor(t, "the verdict gone from the snapshot", func() bool {
		s := readShard(t, client, ShardOf("reg/one-off:v1"))
		return s != nil && s.Verdicts["reg/one-off:v1"] == nil
	})
}
