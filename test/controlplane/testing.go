package controlplane

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// LockedBuffer is a bytes.Buffer one goroutine (or process) writes while a test reads it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CLIForTest finds a CLI make test builds into bin/tools (kubectl, helm). Without it the test is
// skipped, unless REPUTE_REQUIRE_CLIS=1 (as make test sets), when it fails.
func CLIForTest(tb testing.TB, name string) string {
	tb.Helper()
	_, here, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(here), "..", "..", "bin", "tools", name)
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("REPUTE_REQUIRE_CLIS") == "1" {
			tb.Fatalf("%s not built: make test builds it into bin/tools", name)
		}
		tb.Skipf("%s not in bin/tools (make test builds it)", name)
	}
	return bin
}
