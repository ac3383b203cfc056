package signature

import (
	"context"
	"slices"
	"strings"
	"time"

	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	kauth "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/recent"
	"github.com/repute-dev/repute/pkg/shrink"
	"github.com/repute-dev/repute/reputation"
)

// PullSecrets finds registry credentials for images the way the kubelet would for the pods that
// use them: each pod's imagePullSecrets and its service account's, matched to the image by
// go-containerregistry's Kubernetes keychain (the kubelet's rules: hosts, ports, wildcards,
// path prefixes). The scheduling path only notes who uses an image (memory); Secrets and
// ServiceAccounts are read by the engine's workers, through the API, and cached briefly.
type PullSecrets struct {
	Client kubernetes.Interface
	// TTL is how long a Secret or ServiceAccount read is reused. Default 1 minute.
	TTL time.Duration

	mu    sync.Mutex
	users map[string][]puller // repository ("registry/repo") → who pulls it
	// noted is what Note has seen, by the image as pods spell it, so repeats cost a map lookup.
	noted map[string][]puller
	// imagesOf counts the noted images of each repository, so that Forget drops a
	// repository's users with its last image; peak is the most noted images since the maps
	// were last rebuilt.
	imagesOf map[string]int
	peak     int
	// reads holds what was read ("secret/ns/name" → authn.Keychain, nil when unusable;
	// "sa/ns/name" → its pull secrets' names), for TTL and at most maxCachedReads of them:
	// namespaces and names come from pods anyone may create.
	reads *utilcache.LRUExpireCache
}

// puller is who pulls an image: a namespace, a service account and the pod's own pull secrets.
type puller struct {
	namespace, serviceAccount string
	secrets                   string // names, comma-joined, so the struct is comparable
}

const (
	// MaxPullSecretsPerPod bounds the imagePullSecrets read for one pod; the rest are ignored
	// (its service account's are read too, within the same bound).
	MaxPullSecretsPerPod = 16
	// maxPullersPerRepository bounds what is remembered of one repository's users.
	maxPullersPerRepository = 16
	// maxCachedReads bounds the Secrets and ServiceAccounts kept between reads.
	maxCachedReads = 4096
)

// NewPullSecrets reads pull secrets with the given client.
func NewPullSecrets(client kubernetes.Interface) *PullSecrets {
	return &PullSecrets{Client: client, users: map[string][]puller{}, noted: map[string][]puller{}, imagesOf: map[string]int{},
		reads: utilcache.NewLRUExpireCache(maxCachedReads)}
}

// Note records that the pod pulls image. It does no I/O, and a repeat costs a map lookup.
func (p *PullSecrets) Note(pod *v1.Pod, image string) {
	u := puller{namespace: pod.Namespace, serviceAccount: pod.Spec.ServiceAccountName}
	if u.serviceAccount == "" {
		u.serviceAccount = "default"
	}
	if len(pod.Spec.ImagePullSecrets) > 0 {
		// Each name costs a Secret read per evaluation: a pod listing thousands is read only
		// as far as the bound.
		secrets := pod.Spec.ImagePullSecrets[:min(len(pod.Spec.ImagePullSecrets), MaxPullSecretsPerPod)]
		names := make([]string, 0, len(secrets))
		for _, s := range secrets {
			names = append(names, s.Name)
		}
		u.secrets = strings.Join(names, ",")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	noted, added := recent.Append(p.noted[image], u, maxPullersPerRepository)
	if !added {
		return
	}
	ref, err := reputation.ParseImageRef(image)
	if _, known := p.noted[image]; !known {
		p.peak = max(p.peak, len(p.noted)+1)
		if err == nil {
			p.imagesOf[ref.Name()]++
		}
	}
	p.noted[image] = noted // an unparseable image too, so its repeats cost a map lookup
	if err != nil {
		return
	}
	// The newest users are kept: the likeliest to still exist.
	p.users[ref.Name()], _ = recent.Append(p.users[ref.Name()], u, maxPullersPerRepository)
}

// Forget drops what Note learnt of an image no pod uses any more (the engine forgot it), and
// its repository's users with the repository's last image: a flood of one-off images leaves
// nothing behind. A pod that uses it again is noted again before its image is evaluated.
func (p *PullSecrets) Forget(image string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, known := p.noted[image]; !known {
		return
	}
	delete(p.noted, image)
	if ref, err := reputation.ParseImageRef(image); err == nil {
		if p.imagesOf[ref.Name()]--; p.imagesOf[ref.Name()] <= 0 {
			delete(p.imagesOf, ref.Name())
			delete(p.users, ref.Name())
		}
	}
	if shrink.Due(len(p.noted), p.peak) {
		p.noted, p.users, p.imagesOf = shrink.Map(p.noted), shrink.Map(p.users), shrink.Map(p.imagesOf)
		p.peak = len(p.noted)
	}
}

// For returns the credentials that apply to an image, one from each pull secret of each pod
// noted as pulling it, in order and without repeats. Secrets that cannot be read or parsed are
// skipped (and logged): they are missing evidence, never a reason to trust.
func (p *PullSecrets) For(ctx context.Context, ref reputation.ImageRef) []authn.AuthConfig {
	p.mu.Lock()
	users := slices.Clone(p.users[ref.Name()])
	p.mu.Unlock()
	if len(users) == 0 {
		return nil
	}
	repo, err := name.NewRepository(ref.Name())
	if err != nil {
		return nil
	}
	var out []authn.AuthConfig
	for _, u := range users {
		var names []string
		if u.secrets != "" {
			names = strings.Split(u.secrets, ",")
		}
		names = append(names, p.serviceAccountSecrets(ctx, u.namespace, u.serviceAccount)...)
		names = names[:min(len(names), 2*MaxPullSecretsPerPod)]
		for _, secret := range names {
			keychain := p.keychain(ctx, u.namespace, secret)
			if keychain == nil {
				continue
			}
			auth, err := keychain.Resolve(repo)
			if err != nil || auth == authn.Anonymous {
				continue
			}
			cfg, err := auth.Authorization()
			if err == nil && cfg != nil && *cfg != (authn.AuthConfig{}) && !slices.Contains(out, *cfg) {
				out = append(out, *cfg)
			}
		}
	}
	return out
}

func (p *PullSecrets) ttl() time.Duration {
	if p.TTL > 0 {
		return p.TTL
	}
	return time.Minute
}

// serviceAccountSecrets names a service account's imagePullSecrets. Failures are cached too,
// so a missing account is not asked for on every evaluation.
func (p *PullSecrets) serviceAccountSecrets(ctx context.Context, namespace, name string) []string {
	key := "sa/" + namespace + "/" + name
	if v, ok := p.reads.Get(key); ok {
		return v.([]string)
	}
	var names []string
	sa, err := p.Client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		for _, s := range sa.ImagePullSecrets {
			names = append(names, s.Name)
		}
	case !apierrors.IsNotFound(err):
		klog.FromContext(ctx).V(2).Info("Reading a service account's pull secrets", "serviceAccount", klog.KRef(namespace, name), "err", err)
	}
	p.reads.Add(key, names, p.ttl())
	return names
}

// keychain is one pull secret as a keychain, or nil when it cannot be read or parsed; cached
// either way.
func (p *PullSecrets) keychain(ctx context.Context, namespace, name string) authn.Keychain {
	key := "secret/" + namespace + "/" + name
	if v, ok := p.reads.Get(key); ok {
		kc, _ := v.(authn.Keychain)
		return kc
	}
	var keychain authn.Keychain
	logger := klog.FromContext(ctx)
	secret, err := p.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		logger.V(2).Info("Reading a pull secret", "secret", klog.KRef(namespace, name), "err", err)
	} else if keychain, err = KeychainOf(ctx, secret); err != nil {
		logger.Info("Ignoring a malformed pull secret", "secret", klog.KRef(namespace, name), "err", err)
	}
	p.reads.Add(key, keychain, p.ttl())
	return keychain
}

// KeychainOf reads one pull secret of either docker type; other Secrets match nothing. One
// secret at a time: the keychain merges the entries of the secrets it is given.
func KeychainOf(ctx context.Context, secret *v1.Secret) (authn.Keychain, error) {
	return kauth.NewFromPullSecrets(ctx, []v1.Secret{*secret})
}
