// Package controlplane starts a real Kubernetes control plane inside the calling process: an
// embedded etcd and a kube-apiserver, both on random loopback ports. Tests and the demo use it;
// nothing in it is a fake.
package controlplane

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/test/utils/ktesting"
)

// Options shape the control plane.
type Options struct {
	// RBAC turns on RBAC authorization; by default every authenticated request is allowed.
	RBAC bool
	// ExtraFlags are appended to the kube-apiserver flags.
	ExtraFlags []string
	// Restartable lets RestartAPIServer and RestartEtcd restart the control plane under its
	// clients, as a real cluster is restarted behind its load balancer: the apiserver keeps its
	// address, its serving certificate and the admin's client certificate across restarts.
	Restartable bool
}

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	// Kubeconfig is the path of an admin kubeconfig file, for processes and kubectl.
	Kubeconfig string
	// EtcdURL is the embedded etcd's client URL.
	EtcdURL string

	tb        ktesting.TB
	etcd      *embed.Etcd
	etcdCfg   *embed.Config
	apiFlags  []string
	storage   *storagebackend.Config
	apiserver func() // tears the running apiserver down
	front     *frontDoor
	stops     []func()
}

// Start brings up etcd and the apiserver and waits until the apiserver is healthy. Stop must be
// called to release them; with a testing.T, prefer StartForTest.
func Start(tb ktesting.TB, opts Options) (_ *ControlPlane, err error) {
	cp := &ControlPlane{}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	dir, err := os.MkdirTemp("", "repute-controlplane-")
	if err != nil {
		return nil, err
	}
	cp.stops = append(cp.stops, func() { os.RemoveAll(dir) })

	cp.tb = tb
	cp.etcdCfg, err = etcdConfig(filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, err
	}
	if cp.etcd, err = startEtcd(cp.etcdCfg); err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	cp.stops = append(cp.stops, func() { cp.etcd.Close() })
	cp.EtcdURL = cp.etcd.Clients[0].Addr().String()

	cp.storage = storagebackend.NewDefaultConfig("/repute-test/registry", nil)
	cp.storage.Transport.ServerList = []string{"http://" + cp.EtcdURL}

	authz := "AlwaysAllow"
	if opts.RBAC {
		authz = "RBAC"
	}
	cp.apiFlags = append([]string{
		"--endpoint-reconciler-type=none",
		// No controller-manager runs: without these, pods wait forever for a default service
		// account and nodes keep the not-ready taint.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		// NodeRestriction, as kubeadm and managed clusters run it: kubelets may not set labels
		// under node-restriction.kubernetes.io/ (where the pool label lives) nor change taints.
		"--enable-admission-plugins=NodeRestriction",
		"--authorization-mode=" + authz,
	}, opts.ExtraFlags...)
	var admin *rest.Config
	if opts.Restartable {
		if cp.front, admin, err = newFrontDoor(filepath.Join(dir, "pki")); err != nil {
			return nil, err
		}
		cp.apiFlags = append(cp.apiFlags, cp.front.apiserverFlags...)
		cp.stops = append(cp.stops, cp.front.shut)
	}
	loopback, err := cp.startAPIServer()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver: %w", err)
	}
	// Stops run in reverse: the apiserver goes before etcd.
	cp.stops = append(cp.stops, func() { cp.apiserver() })

	cp.Config = loopback
	if admin != nil {
		cp.Config = admin
	}
	cp.Config.QPS, cp.Config.Burst = 500, 1000
	cp.Client, err = kubernetes.NewForConfig(cp.Config)
	if err != nil {
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(cp.Config, cp.Kubeconfig); err != nil {
		return nil, err
	}
	return cp, nil
}

// Stop shuts everything down, newest first. It is safe to call more than once.
func (cp *ControlPlane) Stop() {
	for i := len(cp.stops) - 1; i >= 0; i-- {
		cp.stops[i]()
	}
	cp.stops = nil
}

// startAPIServer starts a kube-apiserver with the control plane's flags and storage, and sends
// the front door, if there is one, to it. It returns the apiserver's own loopback admin config.
func (cp *ControlPlane) startAPIServer() (*rest.Config, error) {
	server, err := apiservertesting.StartTestServer(cp.tb, &apiservertesting.TestServerInstanceOptions{
		EnableCertAuth:         true,
		DisableInvariantChecks: true,
	}, cp.apiFlags, cp.storage)
	if err != nil {
		return nil, err
	}
	cp.apiserver = server.TearDownFn
	if cp.front != nil {
		if err := cp.front.open(server.ClientConfig.Host); err != nil {
			server.TearDownFn()
			return nil, err
		}
	}
	return rest.CopyConfig(server.ClientConfig), nil
}

// RestartAPIServer stops the kube-apiserver, cutting every connection to it, leaves it down for
// the given time and starts a new one on the same etcd, address and certificates. Its clients
// see what they see when a real apiserver restarts: refused connections, broken watches, then
// a server with cold caches.
func (cp *ControlPlane) RestartAPIServer(down time.Duration) error {
	if cp.front == nil {
		return fmt.Errorf("the control plane was not started Restartable")
	}
	cp.front.shut()
	cp.apiserver()
	time.Sleep(down)
	_, err := cp.startAPIServer()
	return err
}

// RestartEtcd stops etcd, leaves it down for the given time and starts it again on the same
// data and addresses. The apiserver stays up and reconnects on its own.
func (cp *ControlPlane) RestartEtcd(down time.Duration) error {
	cp.etcd.Close()
	time.Sleep(down)
	etcd, err := startEtcd(cp.etcdCfg)
	if err != nil {
		return err
	}
	cp.etcd = etcd
	return nil
}

// etcdConfig configures a single-member etcd with no fsync (test data is disposable) on ports
// that are free now and stay its own across restarts.
func etcdConfig(dir string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true
	// etcd's own log is noise here; failures surface as errors from StartEtcd or the apiserver.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	clientURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	return cfg, nil
}

func startEtcd(cfg *embed.Config) (*embed.Etcd, error) {
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-etcd.Server.ReadyNotify():
		return etcd, nil
	case err := <-etcd.Err():
		etcd.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		etcd.Close()
		return nil, fmt.Errorf("etcd not ready after 60s")
	}
}

func freeLoopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return &url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}

// WriteKubeconfig writes a client configuration as a kubeconfig file. The test apiserver's
// certificate is issued for "apiserver-loopback-client", so that server name is kept.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["repute"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["repute"] = &clientcmdapi.Context{Cluster: "repute", AuthInfo: "admin"}
	kc.CurrentContext = "repute"
	return clientcmd.WriteToFile(*kc, path)
}
