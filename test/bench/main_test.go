package bench

import (
	"os"
	"testing"

	"github.com/repute-dev/repute/test/controlplane"
)

func TestMain(m *testing.M) {
	// Plugin start-up logs would interleave with benchmark rows.
	controlplane.QuietLogs()
	os.Exit(m.Run())
}
