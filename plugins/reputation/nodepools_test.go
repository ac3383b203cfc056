package reputation

import (
	"testing"

	"k8s.io/client-go/tools/cache"

	"github.com/repute-dev/repute/reputation"
)

func TestNodePoolsFollowTheInformer(t *testing.T) {
	pl := newTestPlugin(t, testArgs())
	np := pl.nodePools
	h := np.eventHandler()
	trusted, untrusted := classOfTier(reputation.TierTrusted), classOfTier(reputation.TierUntrusted)

	node := poolNode("n", "trusted")
	if got := np.classOf(node); got != trusted {
		t.Fatalf("unindexed node classified %d from labels, want %d", got, trusted)
	}
	h.OnAdd(node, false)
	// Prove the index, not the labels, answers for an indexed object.
	np.byNode.Store(node, foreignPool)
	if got := np.classOf(node); got != foreignPool {
		t.Fatalf("indexed node answered %d, want the index's %d", got, foreignPool)
	}
	h.OnAdd(node, false)

	relabelled := poolNode("n", "untrusted")
	h.OnUpdate(node, relabelled)
	if got := np.classOf(relabelled); got != untrusted {
		t.Errorf("relabelled node = %d, want %d", got, untrusted)
	}
	if _, stillIndexed := np.byNode.Load(node); stillIndexed {
		t.Error("the replaced node object is still indexed")
	}
	unlabelled := poolNode("n", "")
	h.OnUpdate(relabelled, unlabelled)
	if got := np.classOf(unlabelled); got != unpooled {
		t.Errorf("unlabelled node = %d, want unpooled", got)
	}
	other := poolNode("o", "gpu-team")
	h.OnAdd(other, false)
	if got := np.classOf(other); got != foreignPool {
		t.Errorf("node in a pool no tier uses = %d, want foreign", got)
	}
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "o", Obj: other})
	h.OnDelete(unlabelled)
	n := 0
	np.byNode.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d entries left after every node was deleted", n)
	}
	if classOfTier("bogus") != noPool {
		t.Error("an unknown tier must map to no pool at all")
	}
}
