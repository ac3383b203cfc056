package reputation

import (
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

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

// nodePools remembers the pool class of every node object the scheduler's informer has
// delivered, keyed by the object's pointer. Filter runs for thousands of nodes per cycle, and
// reading each node's label map costs several cache misses on a large cluster (it was the whole
// of Reputation's overhead at 5000 nodes); a pointer-keyed lookup touches only this index.
//
// Node objects are immutable once delivered, so an entry is exact for as long as it exists; a
// node object not (yet) indexed is classified from its labels, so event ordering never affects
// correctness, only speed.
type nodePools struct {
	poolKey string
	classes map[string]poolClass // pool label value → class
	byNode  sync.Map             // *v1.Node → poolClass
}

func newNodePools(poolKey string, pools map[reputation.Tier]config.PoolSpec) *nodePools {
	np := &nodePools{poolKey: poolKey, classes: map[string]poolClass{}}
	for tier, spec := range pools {
		np.classes[spec.Name] = classOfTier(tier)
	}
	return np
}

// classOf returns the node's pool class.
func (np *nodePools) classOf(node *v1.Node) poolClass {
	if c, ok := np.byNode.Load(node); ok {
		return c.(poolClass)
	}
	return np.classify(node)
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

// eventHandler keeps the index in step with the node informer.
func (np *nodePools) eventHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if n, ok := obj.(*v1.Node); ok {
				np.byNode.Store(n, np.classify(n))
			}
		},
		UpdateFunc: func(oldObj, newObj interface{}) {
			if n, ok := oldObj.(*v1.Node); ok {
				np.byNode.Delete(n)
			}
			if n, ok := newObj.(*v1.Node); ok {
				np.byNode.Store(n, np.classify(n))
			}
		},
		DeleteFunc: func(obj interface{}) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if n, ok := obj.(*v1.Node); ok {
				np.byNode.Delete(n)
			}
		},
	}
}
