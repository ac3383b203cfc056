package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// crashChildEnv, when set to a store path, makes TestKill9DuringWriteBurst the child: it writes
// decisions as fast as it can from several goroutines and prints each one's ID once the store
// acknowledges it as durable.
const crashChildEnv = "REPUTE_STORE_CRASH_CHILD"

// kill -9 in the middle of a write burst, 20 times over one file, in a real subprocess: every
// acknowledged record is still there afterwards, and the file opens cleanly each time.
func TestKill9DuringWriteBurst(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		writeUntilKilled(path)
		return
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	total := 0
	for round := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9DuringWriteBurst$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "REPUTE_STORE_CRASH_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]bool{}
		lines := bufio.NewScanner(out)
		// Kill after a varying number of acknowledgements, so the kill lands at different
		// points of the writer's transactions.
		killAfter := 200 + round*137
		for lines.Scan() {
			if id, ok := strings.CutPrefix(lines.Text(), "ack "); ok {
				acked[id] = true
				if len(acked) == killAfter {
					_ = cmd.Process.Signal(syscall.SIGKILL)
				}
			}
		}
		_ = cmd.Wait()
		if len(acked) < killAfter {
			t.Fatalf("round %d: the child stopped after %d acknowledgements, before it was killed", round, len(acked))
		}
		s, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("round %d: the store does not open after kill -9: %v", round, err)
		}
		found := map[string]bool{}
		ds, _, err := s.Decisions(Page{}, nil)
		s.Close()
		if err != nil {
			t.Fatalf("round %d: reading decisions: %v", round, err)
		}
		for _, d := range ds {
			found[d.Pod] = true
		}
		for id := range acked {
			if !found[id] {
				t.Fatalf("round %d: acknowledged record %s is missing after kill -9", round, id)
			}
		}
		total += len(acked)
	}
	t.Logf("20 kills, %d acknowledged records, all present", total)
}

func writeUntilKilled(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	round := os.Getenv("REPUTE_STORE_CRASH_ROUND")
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				batch := make([]Decision, 20)
				for j := range batch {
					batch[j] = Decision{Pod: fmt.Sprintf("r%s-g%d-%d-%d", round, g, i, j), Namespace: "crash", Reason: strings.Repeat("x", 200)}
				}
				if err := s.AppendDecisions(context.Background(), batch...); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				for _, d := range batch {
					fmt.Fprintln(w, "ack", d.Pod)
				}
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
