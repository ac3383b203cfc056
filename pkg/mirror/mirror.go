// Package mirror keeps a snapshot of the verdict cache, and of the runtime behavior behind it,
// in ConfigMaps, so that a standby replica is warm when it takes over. The leader writes; every
// other replica reads, continuously, and publishes what it reads into its own cache.
//
// Why the cluster and not the store's volume: bbolt holds an exclusive lock on its file, so a
// standby cannot read the leader's store while it runs, and a volume both replicas mount would
// need ReadWriteMany storage, on which file locks and mmap are unreliable. etcd is already
// replicated and watched; a standby that watches it is warm before it is elected, and no disk is
// read between winning the lease and placing the first pod.
package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/reputation"
)

const (
	// Shards is how many ConfigMaps hold the snapshot; an image's shard is a hash of its name,
	// so one verdict change rewrites one ConfigMap.
	Shards = 16
	// NamePrefix names the ConfigMaps: repute-verdicts-00 … repute-verdicts-15.
	NamePrefix = "repute-verdicts-"
	// DataKey holds the gzipped JSON snapshot in each ConfigMap's binaryData.
	DataKey = "snapshot.json.gz"
	// MaxSnapshotBytes bounds a shard once decompressed, so a corrupt or hostile ConfigMap cannot
	// exhaust memory.
	MaxSnapshotBytes = 64 << 20
	// ComponentLabel marks the snapshot's ConfigMaps, so standbys watch only them.
	ComponentLabel = "app.kubernetes.io/component"
	componentValue = "verdict-snapshot"
	// FlushAfter batches the writes of verdicts that change together.
	FlushAfter = 100 * time.Millisecond
	// MACKey holds, with a key configured, the HMAC-SHA256 of the shard's name and data.
	MACKey = "snapshot.hmac"
	// MinKeyBytes is the shortest HMAC key accepted.
	MinKeyBytes = 32
)

// A failed write is retried after retryAfter, doubling up to maxRetryAfter; tests shorten them.
var retryAfter, maxRetryAfter = time.Second, time.Minute

// ShardName is the ConfigMap that holds shard i.
func ShardName(i int) string { return fmt.Sprintf("%s%02d", NamePrefix, i) }

// ShardOf is the shard that holds an image's verdict, or an event filed under a key.
func ShardOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % Shards)
}

// Behavior is one runtime event and the ledger keys it was filed under.
type Behavior struct {
	Keys  []string                 `json:"keys"`
	Event reputation.BehaviorEvent `json:"event"`
}

// Shard is one ConfigMap's part of the snapshot.
type Shard struct {
	// Verdicts are indexed by the image as pods spell it, like the cache.
	Verdicts map[string]*reputation.Verdict `json:"verdicts"`
	Behavior []Behavior                     `json:"behavior,omitempty"`
}

// spells reports whether image, as a pod spells it ("nginx:1.27"), is the canonical reference
// a verdict names ("docker.io/library/nginx:1.27").
func spells(image, canonical string) bool {
	ref, err := reputation.ParseImageRef(image)
	return err == nil && ref.String() == canonical
}

// Encode is a shard as stored: gzipped JSON.
func Encode(s *Shard) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(s); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode reads a stored shard and refuses anything a scheduler could not use as it is: a
// verdict must name a tier and match the image it is filed under.
func Decode(data []byte) (*Shard, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("snapshot is not gzip: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxSnapshotBytes+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing the snapshot: %w", err)
	}
	if len(raw) > MaxSnapshotBytes {
		return nil, fmt.Errorf("snapshot is larger than %d bytes decompressed", MaxSnapshotBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	s := &Shard{}
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("snapshot is not valid JSON: %w", err)
	}
	for image, v := range s.Verdicts {
		switch {
		case v == nil:
			return nil, fmt.Errorf("verdicts[%q]: null", image)
		case v.Image != image && !spells(image, v.Image):
			return nil, fmt.Errorf("verdicts[%q]: verdict is for image %q", image, v.Image)
		case !slices.Contains(reputation.Tiers, v.Tier):
			return nil, fmt.Errorf("verdicts[%q].tier: %q is not a tier", image, v.Tier)
		}
	}
	for i, b := range s.Behavior {
		if len(b.Keys) == 0 || b.Event.At.IsZero() {
			return nil, fmt.Errorf("behavior[%d]: an event needs keys and a time", i)
		}
	}
	if s.Verdicts == nil {
		s.Verdicts = map[string]*reputation.Verdict{}
	}
	return s, nil
}

// Mirror holds the snapshot in memory and keeps it in step with the cluster: reading while this
// replica stands by, writing once it leads.
type Mirror struct {
	client    kubernetes.Interface
	namespace string
	cache     *reputation.Cache
	// behaviorMaxAge drops events from the snapshot once they weigh nothing.
	behaviorMaxAge func() time.Duration
	// Key, when set, authenticates snapshots: shards are written with an HMAC of their name and
	// data, and read only when it checks.
	Key []byte
	// Admit, when set, is what a standby may place by of a verdict it reads: the runtime caps
	// verdicts decided under another policy, or too long ago.
	Admit func(v *reputation.Verdict, now time.Time) *reputation.Verdict

	mu      sync.Mutex
	shards  [Shards]*Shard
	leading bool
	// queue holds the shards to write, each once however often it changed.
	queue workqueue.TypedRateLimitingInterface[int]
}

// New returns a mirror of cache in namespace. behaviorMaxAge says how long a runtime event is
// kept (0: for ever).
func New(client kubernetes.Interface, namespace string, cache *reputation.Cache, behaviorMaxAge func() time.Duration) *Mirror {
	m := &Mirror{client: client, namespace: namespace, cache: cache, behaviorMaxAge: behaviorMaxAge,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[int](retryAfter, maxRetryAfter),
			workqueue.TypedRateLimitingQueueConfig[int]{Name: "repute_mirror"})}
	for i := range m.shards {
		m.shards[i] = &Shard{Verdicts: map[string]*reputation.Verdict{}}
	}
	cache.Subscribe(m.onVerdict)
	return m
}

// Follow watches the snapshot ConfigMaps and, while this replica stands by, publishes every
// verdict newer than the cache's. It returns once the first listing has been applied (or ctx
// ends, or the list fails: the standby then starts cold and says so), and keeps watching.
func (m *Mirror) Follow(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("namespace", m.namespace)
	// Its own factory: the scheduler's watches no ConfigMaps, and this one watches only the snapshot's.
	factory := informers.NewSharedInformerFactoryWithOptions(m.client, 0, informers.WithNamespace(m.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ComponentLabel + "=" + componentValue }))
	informer := factory.Core().V1().ConfigMaps().Informer()
	apply := func(obj any) {
		cm, ok := obj.(*v1.ConfigMap)
		if !ok {
			return
		}
		i, ok := shardIndex(cm.Name)
		if !ok {
			return
		}
		if err := m.authentic(cm); err != nil {
			logger.Error(err, "Ignoring an unauthenticated verdict snapshot", "configMap", cm.Name, "resourceVersion", cm.ResourceVersion)
			return
		}
		s, err := Decode(cm.BinaryData[DataKey])
		if err != nil {
			// The previous reading stands: a bad write loses nothing already known.
			logger.Error(err, "Ignoring an unreadable verdict snapshot", "configMap", cm.Name, "resourceVersion", cm.ResourceVersion)
			return
		}
		m.adopt(i, s)
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return ctx.Err()
	}
	logger.Info("Verdict cache warmed from the cluster's snapshot", "verdicts", m.cache.Len())
	return nil
}

func shardIndex(name string) (int, bool) {
	for i := range Shards {
		if name == ShardName(i) {
			return i, true
		}
	}
	return 0, false
}

// adopt takes a shard as read from the cluster. While this replica leads, its own memory is
// the newer state and the read is ignored.
func (m *Mirror) adopt(i int, s *Shard) {
	clampTimes(s, time.Now())
	m.mu.Lock()
	if m.leading {
		m.mu.Unlock()
		return
	}
	m.shards[i] = s
	m.mu.Unlock()
	now := time.Now()
	for image, v := range s.Verdicts {
		if Newer(v, m.cache.Get(image)) {
			if m.Admit != nil {
				v = m.Admit(v, now)
			}
			m.cache.Publish(image, v)
		}
	}
}

// clampTimes dates nothing in a snapshot later than now: a verdict stamped in the future would
// win every comparison with the evidence gathered after it, and an event from the future would
// weigh at full strength for as long as it wished.
func clampTimes(s *Shard, now time.Time) {
	for image, v := range s.Verdicts {
		if v.EvaluatedAt.After(now) {
			c := *v
			c.EvaluatedAt = now
			s.Verdicts[image] = &c
		}
	}
	for i := range s.Behavior {
		if s.Behavior[i].Event.At.After(now) {
			s.Behavior[i].Event.At = now
		}
	}
}

// Newer reports whether a mirrored verdict should replace the cached one: when there is none,
// when the cached one is only provisional, or when the mirrored one was evaluated later.
func Newer(mirrored, cached *reputation.Verdict) bool {
	switch {
	case cached == nil || mirrored == cached:
		return cached == nil
	case cached.Provisional && !mirrored.Provisional:
		return true
	default:
		return mirrored.EvaluatedAt.After(cached.EvaluatedAt)
	}
}

// Lead switches the mirror to writing: from now on every verdict published in the cache, and
// every behavior event recorded, is written to the cluster. It returns the behavior events the
// snapshot holds, which the new leader's ledger must carry on.
func (m *Mirror) Lead(ctx context.Context) []Behavior {
	m.mu.Lock()
	m.leading = true
	var events []Behavior
	for _, s := range m.shards {
		events = append(events, s.Behavior...)
	}
	m.mu.Unlock()
	go m.writeLoop(ctx)
	return events
}

func (m *Mirror) onVerdict(image string, _, v *reputation.Verdict) {
	if len(image) > reputation.MaxImageRefLen {
		return // a shard holding it could never be written
	}
	i := ShardOf(image)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading {
		return
	}
	m.shards[i].Verdicts[image] = v
	m.markDirty(i)
}

// Forget drops an image's verdict from the snapshot, for an image no pod uses any more; a no-op
// unless leading.
func (m *Mirror) Forget(image string) {
	i := ShardOf(image)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading {
		return
	}
	if _, ok := m.shards[i].Verdicts[image]; ok {
		delete(m.shards[i].Verdicts, image)
		m.markDirty(i)
	}
}

// RecordBehavior adds a runtime event to the snapshot; events are mirrored only while leading.
func (m *Mirror) RecordBehavior(e reputation.BehaviorEvent, keys []string) {
	if len(keys) == 0 {
		return
	}
	i := ShardOf(keys[0])
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading {
		return
	}
	s := m.shards[i]
	if maxAge := m.behaviorMaxAge(); maxAge > 0 {
		cutoff := time.Now().Add(-maxAge)
		s.Behavior = slices.DeleteFunc(s.Behavior, func(b Behavior) bool { return b.Event.At.Before(cutoff) })
	}
	// The ledger's own bound per image and rule, so a noisy rule cannot grow a shard past what a
	// ConfigMap holds.
	s.Behavior = reputation.KeepNewestPerRule(append(s.Behavior, Behavior{Keys: slices.Clone(keys), Event: e}), func(b Behavior) bool {
		return b.Keys[0] == keys[0] && b.Event.Kind == e.Kind && b.Event.Rule == e.Rule
	})
	m.markDirty(i)
}

// markDirty queues shard i for writing after FlushAfter: the changes of that time, to any
// image of the shard, become one write.
func (m *Mirror) markDirty(i int) { m.queue.AddAfter(i, FlushAfter) }

// writeLoop writes queued shards, one at a time. A failed write is retried through the queue's
// rate limiter, backing off exponentially; a change meanwhile is folded into the retry.
func (m *Mirror) writeLoop(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("namespace", m.namespace)
	go func() {
		<-ctx.Done()
		m.queue.ShutDown()
	}()
	for {
		i, shutdown := m.queue.Get()
		if shutdown {
			return
		}
		m.mu.Lock()
		data, dropped, err := m.encodeFitting(i)
		m.mu.Unlock()
		if dropped > 0 {
			logger.Error(nil, "A verdict snapshot shard outgrew a ConfigMap: its oldest verdicts are left out (they are re-evaluated on takeover)", "configMap", ShardName(i), "dropped", dropped)
		}
		if err == nil {
			err = m.write(ctx, i, data)
		}
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "Writing the verdict snapshot; retrying", "configMap", ShardName(i), "retries", m.queue.NumRequeues(i))
			m.queue.AddRateLimited(i)
		} else {
			m.queue.Forget(i)
		}
		m.queue.Done(i)
	}
}

// MaxShardBytes is what one shard may take once compressed: a ConfigMap holds at most 1 MiB,
// with room left for its metadata and the HMAC.
var MaxShardBytes = 1000 << 10

// encodeFitting encodes shard i, leaving out its oldest verdicts (and then oldest events) until
// it fits a ConfigMap: a shard that cannot be written would stall the snapshot for good. It
// returns how many entries it left out; m.mu is held.
func (m *Mirror) encodeFitting(i int) (data []byte, dropped int, err error) {
	s := m.shards[i]
	for {
		if data, err = Encode(s); err != nil || len(data) <= MaxShardBytes {
			return data, dropped, err
		}
		// Drop a tenth of what is left, oldest first, and try again.
		type entry struct {
			image string
			at    time.Time
		}
		entries := make([]entry, 0, len(s.Verdicts))
		for image, v := range s.Verdicts {
			entries = append(entries, entry{image, v.EvaluatedAt})
		}
		slices.SortFunc(entries, func(a, b entry) int { return a.at.Compare(b.at) })
		n := max(1, len(entries)/10)
		if len(entries) == 0 {
			n = max(1, len(s.Behavior)/10)
			s.Behavior = s.Behavior[min(n, len(s.Behavior)):]
			dropped += n
			continue
		}
		for _, e := range entries[:min(n, len(entries))] {
			delete(s.Verdicts, e.image)
		}
		dropped += n
	}
}

// mac is the HMAC-SHA256 of a shard's ConfigMap name and data: bound to the name, so a signed
// shard cannot be replayed as another.
func (m *Mirror) mac(name string, data []byte) []byte {
	h := hmac.New(sha256.New, m.Key)
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil)
}

func (m *Mirror) binaryData(name string, data []byte) map[string][]byte {
	out := map[string][]byte{DataKey: data}
	if len(m.Key) > 0 {
		out[MACKey] = m.mac(name, data)
	}
	return out
}

// authentic checks a shard's HMAC, when a key is configured.
func (m *Mirror) authentic(cm *v1.ConfigMap) error {
	if len(m.Key) == 0 {
		return nil
	}
	got := cm.BinaryData[MACKey]
	if len(got) == 0 {
		return errors.New("the shard carries no HMAC")
	}
	if !hmac.Equal(got, m.mac(cm.Name, cm.BinaryData[DataKey])) {
		return errors.New("the shard's HMAC does not check: written without the key")
	}
	return nil
}

// ReadKey reads an HMAC key file, refusing a short key.
func ReadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mirror HMAC key: %w", err)
	}
	key = bytes.TrimSpace(key)
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("mirror HMAC key %s: %d bytes, want at least %d", path, len(key), MinKeyBytes)
	}
	return key, nil
}

// write replaces shard i in the cluster. Only the leader writes, so its state wins any conflict.
func (m *Mirror) write(ctx context.Context, i int, data []byte) error {
	cms := m.client.CoreV1().ConfigMaps(m.namespace)
	cm, err := cms.Get(ctx, ShardName(i), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ShardName(i), Namespace: m.namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "repute", ComponentLabel: componentValue}}}
		cm.BinaryData = m.binaryData(cm.Name, data)
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: "repute-scheduler"})
		return err
	}
	if err != nil {
		return err
	}
	cm.BinaryData = m.binaryData(cm.Name, data)
	cm.Data = nil
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "repute-scheduler"})
	if apierrors.IsConflict(err) {
		return errors.New("the snapshot changed underneath: another writer; retrying")
	}
	return err
}
