package auditapi

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/repute-dev/repute/reputation"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// A start that fails (here: the scheduler may not read the front proxy's configuration) releases
// its port, so Run can start it again; once it may, Run serves.
func TestAFailedStartIsRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewSimpleClientset()
	var mayRead atomic.Bool
	client.PrependReactor("*", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if mayRead.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "extension-apiserver-authentication", errors.New("RBAC: not granted"))
	})
	opts := Options{BindAddress: freePort(t), Verdicts: func() (map[string]*reputation.Verdict, error) { return nil, nil }}

	_, err := Serve(ctx, client, opts)
	if err == nil || !strings.Contains(err.Error(), "extension-apiserver-authentication") {
		t.Fatalf("Serve without leave to read the front proxy's configuration: %v, want an error naming it", err)
	}
	l, err := net.Listen("tcp", opts.BindAddress)
	if err != nil {
		t.Fatalf("the failed start kept its port: %v", err)
	}
	_ = l.Close()

	served := make(chan struct{})
	go func() {
		Run(ctx, client, opts)
		close(served)
	}()
	time.Sleep(200 * time.Millisecond) // the first attempt fails as above
	select {
	case <-served:
		t.Fatal("Run returned while the API could not start")
	default:
	}
	mayRead.Store(true)
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not start the API once it could")
	}
	conn, err := net.DialTimeout("tcp", opts.BindAddress, time.Second)
	if err != nil {
		t.Fatalf("Run returned, but nothing listens: %v", err)
	}
	_ = conn.Close()
}
