package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// powerLossChildEnv, when set to a store path, makes TestAcknowledgedBatchesSurvivePowerLoss the
// child: it commits one batch per line read from stdin and prints "ack" after each. With
// powerLossNoSyncEnv set it turns bbolt's fsync off, the negative control.
const (
	powerLossChildEnv  = "REPUTE_STORE_POWERLOSS_CHILD"
	powerLossNoSyncEnv = "REPUTE_STORE_POWERLOSS_NOSYNC"
)

// kill -9 keeps the page cache, so the test above passes with fsync off; power loss does not.
// This one asks the kernel (cachestat, Linux 6.5+) how many of the store file's pages are dirty —
// held only in memory — at each acknowledgement, with the writer paused there. Power lost at that
// instant would lose exactly those pages, so an acknowledged store has none. The same run with
// bbolt's NoSync is the negative control: it must be caught, or the check proves nothing.
func TestAcknowledgedBatchesSurvivePowerLoss(t *testing.T) {
	if path := os.Getenv(powerLossChildEnv); path != "" {
		commitOnRequest(path, os.Getenv(powerLossNoSyncEnv) != "")
		return
	}
	for _, tc := range []struct {
		name      string
		noSync    bool
		wantDirty bool
	}{
		{name: "fsync (as shipped)", wantDirty: false},
		{name: "NoSync (negative control)", noSync: true, wantDirty: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "powerloss.db")
			cmd := exec.Command(os.Args[0], "-test.run=^TestAcknowledgedBatchesSurvivePowerLoss$", "-test.count=1")
			cmd.Env = append(os.Environ(), powerLossChildEnv+"="+path)
			if tc.noSync {
				cmd.Env = append(cmd.Env, powerLossNoSyncEnv+"=1")
			}
			cmd.Stderr = os.Stderr
			requests, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()
			acks := bufio.NewScanner(out)
			var file *os.File
			const batches = 30
			dirtyAcks := 0
			for i := range batches {
				if _, err := fmt.Fprintln(requests, "commit"); err != nil {
					t.Fatal(err)
				}
				if !acks.Scan() || acks.Text() != "ack" {
					t.Fatalf("batch %d: the child did not acknowledge (%q)", i, acks.Text())
				}
				if file == nil { // the child has created it by its first acknowledgement
					if file, err = os.Open(path); err != nil {
						t.Fatal(err)
					}
					defer file.Close()
				}
				var stat unix.Cachestat_t
				if err := unix.Cachestat(uint(file.Fd()), &unix.CachestatRange{}, &stat, 0); err != nil {
					if errors.Is(err, unix.ENOSYS) {
						t.Skipf("this kernel has no cachestat (Linux 6.5+): %v", err)
					}
					t.Fatal(err)
				}
				if stat.Dirty+stat.Writeback > 0 {
					dirtyAcks++
					if !tc.wantDirty {
						t.Fatalf("batch %d acknowledged with %d pages dirty and %d in writeback: power lost now would lose it", i, stat.Dirty, stat.Writeback)
					}
				}
			}
			if tc.wantDirty && dirtyAcks == 0 {
				t.Fatalf("the negative control was not caught: with fsync off no acknowledgement of %d left a dirty page", batches)
			}
			t.Logf("%d of %d acknowledgements left pages only in memory", dirtyAcks, batches)
		})
	}
}

func commitOnRequest(path string, noSync bool) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s.db.NoSync = noSync
	requests := bufio.NewScanner(os.Stdin)
	for i := 0; requests.Scan(); i++ {
		batch := make([]Decision, 20)
		for j := range batch {
			batch[j] = Decision{Pod: fmt.Sprintf("p%d-%d", i, j), Namespace: "powerloss", Reason: strings.Repeat("x", 200)}
		}
		if err := s.AppendDecisions(context.Background(), batch...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("ack")
	}
	os.Exit(0)
}
