package controlplane

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"k8s.io/klog/v2"
)

// ProcessTB lets code outside `go test` (the demo, TestMain) start the apiserver test server,
// which wants a testing.TB-like value. Failures panic with the message; Cleanup runs the
// registered functions, newest first.
type ProcessTB struct {
	name     string
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// NewProcessTB returns a TB named name.
func NewProcessTB(name string) *ProcessTB { return &ProcessTB{name: name} }

// RunCleanups runs and forgets the registered cleanups.
func (t *ProcessTB) RunCleanups() {
	t.mu.Lock()
	c := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

func (t *ProcessTB) Attr(string, string) {}
func (t *ProcessTB) Chdir(dir string)    { _ = os.Chdir(dir) }
func (t *ProcessTB) Helper()             {}
func (t *ProcessTB) Name() string        { return t.name }
func (t *ProcessTB) Setenv(k, v string)  { _ = os.Setenv(k, v) }
func (t *ProcessTB) Skipped() bool       { return false }
func (t *ProcessTB) Failed() bool        { t.mu.Lock(); defer t.mu.Unlock(); return t.failed }
func (t *ProcessTB) Fail()               { t.mu.Lock(); t.failed = true; t.mu.Unlock() }
func (t *ProcessTB) FailNow()            { t.Fail(); panic(t.name + ": FailNow") }
func (t *ProcessTB) Error(args ...any)   { t.Log(args...); t.Fail() }
func (t *ProcessTB) Fatal(args ...any)   { t.Fail(); panic(fmt.Sprint(args...)) }
func (t *ProcessTB) Skip(args ...any) {
	panic("skip is not supported outside go test: " + fmt.Sprint(args...))
}
func (t *ProcessTB) SkipNow()                  { t.Skip() }
func (t *ProcessTB) Cleanup(f func())          { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }
func (t *ProcessTB) Errorf(f string, a ...any) { t.Error(fmt.Sprintf(f, a...)) }
func (t *ProcessTB) Fatalf(f string, a ...any) { t.Fatal(fmt.Sprintf(f, a...)) }
func (t *ProcessTB) Skipf(f string, a ...any)  { t.Skip(fmt.Sprintf(f, a...)) }
func (t *ProcessTB) Logf(f string, a ...any)   { t.Log(fmt.Sprintf(f, a...)) }

// Log drops the message: outside tests the apiserver's chatter has no reader; failures still
// reach the caller through Fatal.
func (t *ProcessTB) Log(args ...any) {}

// TempDir returns a new temporary directory, removed at cleanup.
func (t *ProcessTB) TempDir() string {
	dir, err := os.MkdirTemp("", "repute-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// QuietLogs sends klog output (the apiserver's and the scheduler's) nowhere unless
// REPUTE_LOGS=1, so test and demo output stays readable.
func QuietLogs() {
	if os.Getenv("REPUTE_LOGS") == "1" {
		return
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
}
