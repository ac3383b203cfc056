package signature

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/reputation"
)

// RegistryCredential is one entry of a pull secret: the registry (and optionally repository
// path) it is for, as kubelet matches them, and the credentials.
type RegistryCredential struct {
	// Host is the registry host, with port if any; it may hold glob wildcards per DNS label
	// ("*.corp.example").
	Host string
	// PathPrefix, when set, limits the entry to repositories under it.
	PathPrefix string
	Auth       authn.AuthConfig
}

// maxDockerConfigBytes bounds a pull secret's payload; real ones are a few kilobytes.
const maxDockerConfigBytes = 1 << 20

// ParseDockerConfig reads a pull secret's payload: a .dockerconfigjson ({"auths": {...}}) or
// a legacy .dockercfg ({registry: {...}}). Entries carry "username"/"password" or "auth"
// (base64 of "user:password"), or an identity token. A malformed payload is an error that
// says where.
func ParseDockerConfig(data []byte, legacy bool) ([]RegistryCredential, error) {
	if len(data) > maxDockerConfigBytes {
		return nil, fmt.Errorf("docker config larger than %d bytes", maxDockerConfigBytes)
	}
	type entry struct {
		Username      string `json:"username"`
		Password      string `json:"password"`
		Auth          string `json:"auth"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	}
	var auths map[string]entry
	if legacy {
		if err := json.Unmarshal(data, &auths); err != nil {
			return nil, fmt.Errorf(".dockercfg: %w", err)
		}
	} else {
		var cfg struct {
			Auths map[string]entry `json:"auths"`
		}
		if err := json.Unmarshal(data, &cfg); err != nil {
			return nil, fmt.Errorf(".dockerconfigjson: %w", err)
		}
		auths = cfg.Auths
	}
	keys := make([]string, 0, len(auths))
	for k := range auths {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable order, so the same secret always tries credentials alike
	var out []RegistryCredential
	for _, key := range keys {
		e := auths[key]
		host, prefix, err := parseRegistryKey(key)
		if err != nil {
			return nil, fmt.Errorf("auths[%q]: %w", key, err)
		}
		cred := RegistryCredential{Host: host, PathPrefix: prefix, Auth: authn.AuthConfig{
			Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth: not base64: %w", key, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("auths[%q].auth: not user:password", key)
			}
			cred.Auth.Username, cred.Auth.Password = user, pass
		}
		if cred.Auth == (authn.AuthConfig{}) {
			return nil, fmt.Errorf("auths[%q]: no credentials", key)
		}
		out = append(out, cred)
	}
	return out, nil
}

// parseRegistryKey reads a docker config key: "registry.example:5000", "https://host/v1/",
// "*.corp.example/team". Docker Hub's many spellings become "docker.io", as image references
// spell it.
func parseRegistryKey(key string) (host, pathPrefix string, err error) {
	k := key
	for _, scheme := range []string{"https://", "http://"} {
		k = strings.TrimPrefix(k, scheme)
	}
	host, pathPrefix, _ = strings.Cut(k, "/")
	pathPrefix = strings.Trim(pathPrefix, "/")
	if pathPrefix == "v1" || pathPrefix == "v2" {
		pathPrefix = ""
	}
	host = strings.ToLower(host)
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		host = "docker.io"
	}
	if host == "" || strings.ContainsAny(host, " \t\n@") {
		return "", "", errors.New("not a registry host")
	}
	if _, err := path.Match(host, ""); err != nil {
		return "", "", fmt.Errorf("bad wildcard: %w", err)
	}
	return host, pathPrefix, nil
}

// Matches reports whether the entry is for the image's registry and repository. Wildcards
// match one DNS label each and a port must be spelled alike, as kubelet matches them.
func (c RegistryCredential) Matches(ref reputation.ImageRef) bool {
	if !hostMatches(c.Host, strings.ToLower(ref.Registry)) {
		return false
	}
	return c.PathPrefix == "" || ref.Repository == c.PathPrefix || strings.HasPrefix(ref.Repository, c.PathPrefix+"/")
}

func hostMatches(pattern, host string) bool {
	pHost, pPort, _ := strings.Cut(pattern, ":")
	hHost, hPort, _ := strings.Cut(host, ":")
	if pPort != hPort {
		return false
	}
	pLabels, hLabels := strings.Split(pHost, "."), strings.Split(hHost, ".")
	if len(pLabels) != len(hLabels) {
		return false
	}
	for i := range pLabels {
		if ok, _ := path.Match(pLabels[i], hLabels[i]); !ok {
			return false
		}
	}
	return true
}

// PullSecrets finds registry credentials for images the way the kubelet would for the pods that
// use them: each pod's imagePullSecrets and its service account's. The scheduling path only
// notes who uses an image (memory); Secrets and ServiceAccounts are read by the engine's
// workers, through the API, and cached briefly.
type PullSecrets struct {
	Client kubernetes.Interface
	// TTL is how long a Secret or ServiceAccount read is reused. Default 1 minute.
	TTL time.Duration

	mu    sync.Mutex
	users map[string][]puller // repository ("registry/repo") → who pulls it
	// noted is what Note has seen, by the image as pods spell it, so repeats cost a map lookup.
	noted map[string][]puller
	cache map[string]cached // "secret/ns/name" or "sa/ns/name"
	now   func() time.Time
}

// puller is who pulls an image: a namespace, a service account and the pod's own pull secrets.
type puller struct {
	namespace, serviceAccount string
	secrets                   string // names, comma-joined, so the struct is comparable
}

type cached struct {
	at      time.Time
	creds   []RegistryCredential
	secrets []string // a service account's imagePullSecrets
}

// maxPullersPerRepository bounds what is remembered of one repository's users.
const maxPullersPerRepository = 16

// NewPullSecrets reads pull secrets with the given client.
func NewPullSecrets(client kubernetes.Interface) *PullSecrets {
	return &PullSecrets{Client: client, users: map[string][]puller{}, noted: map[string][]puller{}, cache: map[string]cached{}, now: time.Now}
}

// Note records that the pod pulls image. It does no I/O, and a repeat costs a map lookup.
func (p *PullSecrets) Note(pod *v1.Pod, image string) {
	u := puller{namespace: pod.Namespace, serviceAccount: pod.Spec.ServiceAccountName}
	if u.serviceAccount == "" {
		u.serviceAccount = "default"
	}
	if len(pod.Spec.ImagePullSecrets) > 0 {
		names := make([]string, 0, len(pod.Spec.ImagePullSecrets))
		for _, s := range pod.Spec.ImagePullSecrets {
			names = append(names, s.Name)
		}
		u.secrets = strings.Join(names, ",")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Contains(p.noted[image], u) {
		return
	}
	p.noted[image] = appendBounded(p.noted[image], u)
	ref, err := reputation.ParseImageRef(image)
	if err != nil {
		return
	}
	if !slices.Contains(p.users[ref.Name()], u) {
		p.users[ref.Name()] = appendBounded(p.users[ref.Name()], u)
	}
}

// appendBounded keeps the newest maxPullersPerRepository users: the likeliest to still exist.
func appendBounded(list []puller, u puller) []puller {
	if len(list) >= maxPullersPerRepository {
		list = list[1:]
	}
	return append(list, u)
}

// For returns the credentials that apply to an image, from every pull secret of every pod noted
// as pulling it, in order and without repeats. Secrets that cannot be read or parsed are
// skipped (and logged): they are missing evidence, never a reason to trust.
func (p *PullSecrets) For(ctx context.Context, ref reputation.ImageRef) []authn.AuthConfig {
	p.mu.Lock()
	users := slices.Clone(p.users[ref.Name()])
	p.mu.Unlock()
	var out []authn.AuthConfig
	for _, u := range users {
		var names []string
		if u.secrets != "" {
			names = strings.Split(u.secrets, ",")
		}
		names = append(names, p.read(ctx, "sa", u.namespace, u.serviceAccount).secrets...)
		for _, name := range names {
			for _, c := range p.read(ctx, "secret", u.namespace, name).creds {
				if c.Matches(ref) && !slices.Contains(out, c.Auth) {
					out = append(out, c.Auth)
				}
			}
		}
	}
	return out
}

// read gets a Secret's credentials or a ServiceAccount's pull secret names, cached for TTL
// (failures too, so a missing Secret is not asked for on every evaluation).
func (p *PullSecrets) read(ctx context.Context, kind, namespace, name string) cached {
	key := kind + "/" + namespace + "/" + name
	ttl := p.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	p.mu.Lock()
	c, ok := p.cache[key]
	p.mu.Unlock()
	if ok && p.now().Sub(c.at) < ttl {
		return c
	}
	c = cached{at: p.now()}
	logger := klog.FromContext(ctx)
	switch kind {
	case "sa":
		sa, err := p.Client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			logger.V(2).Info("Reading a service account's pull secrets", "serviceAccount", klog.KRef(namespace, name), "err", err)
		}
		if err == nil {
			for _, s := range sa.ImagePullSecrets {
				c.secrets = append(c.secrets, s.Name)
			}
		}
	case "secret":
		secret, err := p.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			logger.V(2).Info("Reading a pull secret", "secret", klog.KRef(namespace, name), "err", err)
			break
		}
		creds, err := credentialsOf(secret)
		if err != nil {
			logger.Info("Ignoring a malformed pull secret", "secret", klog.KRef(namespace, name), "err", err)
		}
		c.creds = creds
	}
	p.mu.Lock()
	p.cache[key] = c
	p.mu.Unlock()
	return c
}

// credentialsOf reads a pull secret of either docker type; other Secrets hold no credentials.
func credentialsOf(secret *v1.Secret) ([]RegistryCredential, error) {
	switch secret.Type {
	case v1.SecretTypeDockerConfigJson:
		return ParseDockerConfig(secret.Data[v1.DockerConfigJsonKey], false)
	case v1.SecretTypeDockercfg:
		return ParseDockerConfig(secret.Data[v1.DockerConfigKey], true)
	}
	return nil, fmt.Errorf("type %s is not a pull secret", secret.Type)
}
