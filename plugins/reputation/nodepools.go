package reputation

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// poolClass is what a node's pool label means to Repute: one tier's pool, no pool, or a pool
// no tier uses.
type poolClass int8

const (
	unpooled    poolClass = -1
	foreignPool poolClass = -2
	// noPool is the class of a tier Repute does not know; no node has it.
	noPool poolClass = -3
)

// classOfTier is the class of a tier's own pool: its index in reputation.Tiers.
func classOfTier(t reputation.Tier) poolClass {
	for i, tt := range reputation.Tiers {
		if tt == t {
			return poolClass(i)
		}
	}
	return noPool
}

// publishDelay batches index rebuilds: node updates within it cost one copy of the index.
const publishDelay = 200 * time.Millisecond

// nodePools remembers the pool class of every node object the scheduler's informer delivered,
// keyed by the object's pointer, with the node's rejections built once (see nodeRecord). Filter runs for thousands of nodes per cycle, and reading each
// node's label map costs several cache misses on a large cluster (it was nearly all of
// Reputation's overhead at 5000 nodes). Filter reads an immutable pointer-keyed map instead:
// compact, lock-free, and warm in cache.
//
// Node objects are immutable once delivered, so an entry is exact for as long as it exists. An
// object not yet in the published map (updates are published in batches) is classified from its
// labels, so the index only ever changes speed, never answers.
type nodePools struct {
	poolKey string
	classes map[string]poolClass // pool label value → class

	published atomic.Pointer[map[*v1.Node]*nodeRecord]

	mu      sync.Mutex
	live    map[*v1.Node]*nodeRecord
	pending bool // a publication is scheduled

	// onDelete hears of each node that left the cluster, so per-node state elsewhere goes too.
	onDelete func(name string)
}

// nodeRecord is what Filter needs of one node object: its pool class, and its two rejections,
// built with the record. Filter returns them as they are, so a rejected node costs no allocation
// (most nodes a pod visits are outside its pool). The framework only stamps the plugin's name on
// a returned status, and one Filter at a time handles a node, so sharing one per node is safe.
type nodeRecord struct {
	class                       poolClass
	notInPool, untoleratedTaint *fwk.Status
}

// rejection is the prebuilt status, or a fresh one for a record built for one call.
func (r *nodeRecord) rejection(prebuilt **fwk.Status, reason string) *fwk.Status {
	if *prebuilt == nil {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, reason)
	}
	return *prebuilt
}

func newNodeRecord(class poolClass) *nodeRecord {
	return &nodeRecord{class: class,
		notInPool:        fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool),
		untoleratedTaint: fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonUntoleratedTaint)}
}

func newNodePools(poolKey string, pools map[reputation.Tier]config.PoolSpec) *nodePools {
	np := &nodePools{poolKey: poolKey, classes: map[string]poolClass{}, live: map[*v1.Node]*nodeRecord{}}
	for tier, spec := range pools {
		np.classes[spec.Name] = classOfTier(tier)
	}
	return np
}

// classOf returns the node's pool class.
func (np *nodePools) classOf(node *v1.Node) poolClass {
	if r := np.recordOf(node); r != nil {
		return r.class
	}
	return np.classify(node)
}

// recordOf returns the node's published record, or nil for a node object not published yet:
// Filter then classifies it from its labels and builds a rejection only when it rejects.
func (np *nodePools) recordOf(node *v1.Node) *nodeRecord {
	if m := np.published.Load(); m != nil {
		return (*m)[node]
	}
	return nil
}

func (np *nodePools) classify(node *v1.Node) poolClass {
	name, pooled := node.Labels[np.poolKey]
	if !pooled {
		return unpooled
	}
	if c, ok := np.classes[name]; ok {
		return c
	}
	return foreignPool
}

// replace records that node objects came and went, and schedules a publication.
func (np *nodePools) replace(gone, added *v1.Node) {
	np.mu.Lock()
	defer np.mu.Unlock()
	if gone != nil {
		delete(np.live, gone)
	}
	if added != nil {
		np.live[added] = newNodeRecord(np.classify(added))
	}
	if !np.pending {
		np.pending = true
		time.AfterFunc(publishDelay, np.publish)
	}
}

// publish makes the current index visible to Filter.
func (np *nodePools) publish() {
	np.mu.Lock()
	m := maps.Clone(np.live)
	np.pending = false
	np.mu.Unlock()
	np.published.Store(&m)
}

// eventHandler keeps the index in step with the node informer.
func (np *nodePools) eventHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if n, ok := obj.(*v1.Node); ok {
				np.replace(nil, n)
			}
		},
		UpdateFunc: func(oldObj, newObj interface{}) {
			o, _ := oldObj.(*v1.Node)
			n, _ := newObj.(*v1.Node)
			np.replace(o, n)
		},
		DeleteFunc: func(obj interface{}) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if n, ok := obj.(*v1.Node); ok {
				np.replace(n, nil)
				if np.onDelete != nil {
					np.onDelete(n.Name)
				}
			}
		},
	}
}
