package mirror

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// SecretKeyName is the key in a Secret that holds the snapshot's HMAC key.
const SecretKeyName = "key"

// ErrShortKey is a kept key too short to use: asking again does not help.
var ErrShortKey = errors.New("the HMAC key is too short")

// EnsureKey returns the HMAC key kept in the Secret namespace/name, creating the Secret with a
// fresh random key (48 bytes, base64) if there is none, so both replicas sign and check with
// one key without an operator making it. When two replicas race to create it, the loser reads
// the winner's. A kept key shorter than MinKeyBytes is refused, never replaced: replacing it
// would make the other replica's shards unreadable without saying why.
func EnsureKey(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]byte, error) {
	secrets := client.CoreV1().Secrets(namespace)
	for attempt := 0; attempt < 2; attempt++ {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			key := bytes.TrimSpace(s.Data[SecretKeyName])
			if len(key) < MinKeyBytes {
				return nil, fmt.Errorf("mirror HMAC key in Secret %s/%s (key %q): %w: %d bytes, want at least %d", namespace, name, SecretKeyName, ErrShortKey, len(key), MinKeyBytes)
			}
			return key, nil
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("mirror HMAC key: reading Secret %s/%s: %w", namespace, name, err)
		}
		random := make([]byte, 48)
		if _, err := rand.Read(random); err != nil {
			return nil, err
		}
		key := []byte(base64.StdEncoding.EncodeToString(random))
		_, err = secrets.Create(ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "repute", "app.kubernetes.io/managed-by": "repute-scheduler"}},
			Type: v1.SecretTypeOpaque, Data: map[string][]byte{SecretKeyName: key}}, metav1.CreateOptions{})
		switch {
		case err == nil:
			return key, nil
		case !apierrors.IsAlreadyExists(err):
			return nil, fmt.Errorf("mirror HMAC key: creating Secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, fmt.Errorf("mirror HMAC key: Secret %s/%s was created and is gone", namespace, name)
}
