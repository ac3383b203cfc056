package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fullChildEnv, when set to a store path, makes TestWritesFailLoudlyWhenTheDiskIsFull the child.
const fullChildEnv = "REPUTE_STORE_FULL_CHILD"

// A store that cannot grow its file fails its writes loudly (an error for each waiting caller,
// Err set, OnCommit told), loses none of what it acknowledged before, opens cleanly afterwards,
// and recovers by itself once there is room again. The disk is "full" through RLIMIT_FSIZE in a
// real subprocess (writes past the limit fail with EFBIG), which needs no root and no tmpfs.
func TestWritesFailLoudlyWhenTheDiskIsFull(t *testing.T) {
	if path := os.Getenv(fullChildEnv); path != "" {
		fillTheDisk(path)
		return
	}
	path := filepath.Join(t.TempDir(), "full.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestWritesFailLoudlyWhenTheDiskIsFull$", "-test.count=1")
	cmd.Env = append(os.Environ(), fullChildEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	report := map[string]string{}
	var acked []string
	lines := bufio.NewScanner(strings.NewReader(string(out)))
	for lines.Scan() {
		key, value, _ := strings.Cut(lines.Text(), " ")
		if key == "ack" {
			acked = append(acked, value)
		} else {
			report[key] = value
		}
	}
	for _, key := range []string{"failed", "degraded", "onCommitError"} {
		if !strings.Contains(report[key], "file too large") {
			t.Errorf("%s = %q, want the write error (file too large)", key, report[key])
		}
	}
	if report["recovered"] != "true" {
		t.Errorf("after room was made: recovered = %q, want true (Err cleared, a new write acknowledged)", report["recovered"])
	}
	if len(acked) < 10 {
		t.Fatalf("only %d records were acknowledged before the disk filled", len(acked))
	}
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the store does not open after its disk filled: %v", err)
	}
	defer s.Close()
	ds, _, err := s.Decisions(Page{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, d := range ds {
		found[d.Pod] = true
	}
	for _, id := range acked {
		if !found[id] {
			t.Fatalf("acknowledged record %s is missing after the disk filled", id)
		}
	}
	if !found["after-recovery"] {
		t.Error("the record written after recovery is missing")
	}
	t.Logf("%d records acknowledged before the disk filled, all present; first failure: %s", len(acked), report["failed"])
}

// fillTheDisk is the child: it caps its file size a little above the fresh store, writes until
// a write fails, reports how the store said so, then lifts the cap and writes once more.
func fillTheDisk(path string) {
	var onCommitErr error
	s, err := Open(path, Options{OnCommit: func(_ int, _ time.Duration, _ int64, err error) {
		if err != nil && onCommitErr == nil {
			onCommitErr = err
		}
	}})
	if err != nil {
		fmt.Println("open", err)
		os.Exit(2)
	}
	// Past the limit a write gets EFBIG instead of the process being killed by SIGXFSZ.
	signal.Ignore(syscall.SIGXFSZ)
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		fmt.Println("getrlimit", err)
		os.Exit(2)
	}
	info, _ := os.Stat(path)
	capped := limit
	capped.Cur = uint64(info.Size()) + 256<<10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &capped); err != nil {
		fmt.Println("setrlimit", err)
		os.Exit(2)
	}
	ctx := context.Background()
	for i := 0; i < 100000; i++ {
		d := Decision{Pod: fmt.Sprintf("p%d", i), Namespace: "full", Reason: strings.Repeat("x", 500)}
		if err := s.AppendDecisions(ctx, d); err != nil {
			fmt.Println("failed", oneLine(err))
			break
		}
		fmt.Println("ack", d.Pod)
	}
	fmt.Println("degraded", oneLine(s.Err()))
	fmt.Println("onCommitError", oneLine(onCommitErr))
	// Room again: the next write succeeds and the store is no longer degraded.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		fmt.Println("setrlimit", err)
		os.Exit(2)
	}
	err = s.AppendDecisions(ctx, Decision{Pod: "after-recovery", Namespace: "full"})
	fmt.Println("recovered", err == nil && s.Err() == nil)
	if err := s.Close(); err != nil {
		fmt.Println("close", err)
	}
}

func oneLine(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
