package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/reputation/store"
)

// recoveryDone is what the binary logs once it has checked the pods bound into its pools
// against its store at takeover.
const recoveryDone = "Checked that every pod bound into the pools has its placement decision"

// The real binary is SIGKILLed in the middle of a burst of placements, then started again on
// the same store: every pod Repute bound has exactly one decision record, its own or one filed
// at takeover ("recovered") for a record that died in the write queue. make soak runs 5 rounds
// of 300 pods; make test, 2 of 60.
func TestKilledSchedulerLosesNoDecision(t *testing.T) {
	rounds, pods := 2, 60
	if os.Getenv("REPUTE_SOAK") != "" {
		rounds, pods = 5, 300
	}
	bin := schedulerBinary(t)
	e := newEnv(t)
	for i := range rounds*pods/100 + 1 { // 110 pods fit a node
		e.node(fmt.Sprintf("trusted-%d", i), "trusted")
	}
	cfg := e.config()
	cfg.StorePath = filepath.Join(t.TempDir(), "repute.db")
	config := cfg.Render()

	recoveredInAll := 0
	for round := range rounds {
		cmd, stderr, exited := startBinary(t, bin, config)
		names := make([]string, pods)
		for i := range names {
			names[i] = fmt.Sprintf("r%d-p%d", round, i)
			e.create(e.pod(names[i], trustedImage))
		}
		// Kill once half the burst is bound: the rest binds after the restart.
		e.waitBoundCount(names, pods/2, bindTimeout)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited

		cmd, stderr, exited = startBinary(t, bin, config)
		for _, name := range names {
			e.waitBound(name, bindTimeout)
		}
		if err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return strings.Contains(stderr.String(), recoveryDone), nil
		}); err != nil {
			t.Fatalf("round %d: the restarted scheduler never checked its decisions:\n%s", round, tail(stderr.String(), 20))
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited

		perPod := decisionsPerPod(t, cfg.StorePath, e.ns, fmt.Sprintf("r%d-", round))
		recovered := 0
		for _, name := range names {
			actions := perPod[name]
			if len(actions) != 1 || (actions[0] != "" && actions[0] != reputeruntime.ActionRecovered) {
				t.Errorf("round %d: pod %s has decisions %q, want exactly one placement", round, name, actions)
			}
			if len(actions) == 1 && actions[0] == reputeruntime.ActionRecovered {
				recovered++
			}
		}
		recoveredInAll += recovered
		t.Logf("round %d: %d pods bound, killed after %d, %d decisions recovered at restart", round, pods, pods/2, recovered)
	}
	t.Logf("%d rounds: every pod has exactly one decision; %d recovered in all", rounds, recoveredInAll)
}

// decisionsPerPod reads a stopped scheduler's store: the actions of the decisions recorded for
// each pod of the namespace whose name has the prefix.
func decisionsPerPod(t *testing.T, storePath, namespace, prefix string) map[string][]string {
	t.Helper()
	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	perPod := map[string][]string{}
	if _, _, err = st.Decisions(store.Page{}, func(d *store.Decision) bool {
		if d.Namespace == namespace && strings.HasPrefix(d.Pod, prefix) {
			perPod[d.Pod] = append(perPod[d.Pod], d.Action)
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	return perPod
}

// waitBoundCount waits until at least n of the named pods are bound.
func (e *env) waitBoundCount(names []string, n int, timeout time.Duration) {
	e.t.Helper()
	if bound := e.boundCount(names, n, timeout); bound < n {
		e.t.Fatalf("%d of %d pods bound within %s, want %d", bound, len(names), timeout, n)
	}
}

// boundCount waits up to timeout until at least n of the named pods are bound, and returns
// how many are. A failing List counts as not yet: the control plane may be coming back.
func (e *env) boundCount(names []string, n int, timeout time.Duration) int {
	wanted := map[string]bool{}
	for _, name := range names {
		wanted[name] = true
	}
	bound := 0
	_ = wait.PollUntilContextTimeout(e.ctx, 5*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := e.client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		bound = 0
		for _, p := range list.Items {
			if wanted[p.Name] && p.Spec.NodeName != "" {
				bound++
			}
		}
		return bound >= n, nil
	})
	return bound
}
