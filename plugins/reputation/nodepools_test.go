package reputation

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
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
	np.publish() // what the batching timer does
	// Prove the published index, not the labels, answers for an indexed object.
	np.published.Store(&map[*v1.Node]*nodeRecord{node: newNodeRecord(foreignPool)})
	if got := np.classOf(node); got != foreignPool {
		t.Fatalf("indexed node answered %d, want the index's %d", got, foreignPool)
	}
	np.publish()
	if got := np.classOf(node); got != trusted {
		t.Fatalf("published index answered %d, want %d", got, trusted)
	}

	relabelled := poolNode("n", "untrusted")
	h.OnUpdate(node, relabelled)
	// Before the batch is published, the new object is classified from its labels.
	if got := np.classOf(relabelled); got != untrusted {
		t.Errorf("relabelled node before publication = %d, want %d", got, untrusted)
	}
	np.publish()
	if got := np.classOf(relabelled); got != untrusted {
		t.Errorf("relabelled node = %d, want %d", got, untrusted)
	}
	if _, stillIndexed := (*np.published.Load())[node]; stillIndexed {
		t.Error("the replaced node object is still indexed")
	}
	unlabelled := poolNode("n", "")
	h.OnUpdate(relabelled, unlabelled)
	other := poolNode("o", "gpu-team")
	h.OnAdd(other, false)
	np.publish()
	if got := np.classOf(unlabelled); got != unpooled {
		t.Errorf("unlabelled node = %d, want unpooled", got)
	}
	if got := np.classOf(other); got != foreignPool {
		t.Errorf("node in a pool no tier uses = %d, want foreign", got)
	}
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "o", Obj: other})
	h.OnDelete(unlabelled)
	np.publish()
	if n := len(*np.published.Load()); n != 0 {
		t.Errorf("%d entries left after every node was deleted", n)
	}
	// The batching timer publishes by itself.
	h.OnAdd(node, false)
	deadline := time.Now().Add(5 * time.Second)
	for len(*np.published.Load()) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(*np.published.Load()); n != 1 {
		t.Errorf("timer did not publish the added node: %d entries", n)
	}
	if classOfTier("bogus") != noPool {
		t.Error("an unknown tier must map to no pool at all")
	}
}
