package mirror

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestEnsureKey(t *testing.T) {
	ctx := context.Background()
	secret := func(key string) *v1.Secret {
		return &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "repute-mirror-key", Namespace: "kube-system"}, Data: map[string][]byte{SecretKeyName: []byte(key)}}
	}
	theirs := strings.Repeat("k", 40)

	t.Run("made once, then kept", func(t *testing.T) {
		client := fake.NewClientset()
		first, err := EnsureKey(ctx, client, "kube-system", "repute-mirror-key")
		if err != nil || len(first) < MinKeyBytes {
			t.Fatalf("EnsureKey = %d bytes, %v; want a new key of at least %d", len(first), err, MinKeyBytes)
		}
		second, err := EnsureKey(ctx, client, "kube-system", "repute-mirror-key")
		if err != nil || !bytes.Equal(first, second) {
			t.Fatalf("a second start got another key (%v): the replicas would not read each other's shards", err)
		}
	})
	t.Run("an operator's key is used as it is", func(t *testing.T) {
		client := fake.NewClientset(secret(theirs + "\n"))
		if got, err := EnsureKey(ctx, client, "kube-system", "repute-mirror-key"); err != nil || string(got) != theirs {
			t.Fatalf("EnsureKey = %q, %v; want the kept key, trimmed", got, err)
		}
	})
	t.Run("a short kept key is refused, not replaced", func(t *testing.T) {
		client := fake.NewClientset(secret("short"))
		if _, err := EnsureKey(ctx, client, "kube-system", "repute-mirror-key"); !errors.Is(err, ErrShortKey) || !strings.Contains(err.Error(), "want at least") {
			t.Fatalf("EnsureKey on a 5-byte key: %v; want a refusal", err)
		}
		if s, _ := client.CoreV1().Secrets("kube-system").Get(ctx, "repute-mirror-key", metav1.GetOptions{}); string(s.Data[SecretKeyName]) != "short" {
			t.Error("the short key was overwritten")
		}
	})
	t.Run("two replicas at once: the loser takes the winner's", func(t *testing.T) {
		client := fake.NewClientset()
		raced := false
		client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			if raced {
				return false, nil, nil
			}
			raced = true
			if err := client.Tracker().Add(secret(theirs)); err != nil { // the other replica's, first
				t.Fatal(err)
			}
			return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, "repute-mirror-key")
		})
		if got, err := EnsureKey(ctx, client, "kube-system", "repute-mirror-key"); err != nil || string(got) != theirs {
			t.Fatalf("EnsureKey = %q, %v; want the winner's key", got, err)
		}
	})
}
