// Package leadership tells Repute's background work whether this process is the replica that
// schedules. kube-scheduler elects its leader itself and tells plugins nothing: a standby
// replica builds its plugins, starts its informers and then waits, and the leader's plugins are
// never told that they lead. Repute must know, because only the leader may evict, write
// ConfigMaps, policy status and the store, or gather evidence that could contradict the
// leader's.
//
// Two facts answer the question without guessing:
//   - kube-scheduler's component configuration, published through configz as soon as it runs,
//     says whether leader election is on at all;
//   - client-go's leader elector reports every acquired or lost lease to the leader-election
//     metrics provider, which this package installs (it keeps client-go's
//     leader_election_master_status gauge, so nothing is lost to dashboards).
package leadership

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/component-base/configz"
	k8smetrics "k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

// leaderGauge is client-go's leader_election_master_status, which this provider replaces.
var leaderGauge = k8smetrics.NewGaugeVec(&k8smetrics.GaugeOpts{
	Name:           "leader_election_master_status",
	StabilityLevel: k8smetrics.ALPHA,
	Help:           "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
}, []string{"name"})

var slowpathCounter = k8smetrics.NewCounterVec(&k8smetrics.CounterOpts{
	Name:           "leader_election_slowpath_total",
	StabilityLevel: k8smetrics.ALPHA,
	Help:           "Total number of slow path exercised in renewing leader leases. 'name' is the string used to identify the lease. Please make sure to group by name.",
}, []string{"name"})

// elections is the process's record of the leases it holds, as the leader elector reports them.
var elections = struct {
	mu sync.Mutex
	// electors counts leader electors created; leading holds the names of leases held.
	electors int
	leading  map[string]bool
	changed  chan struct{} // closed and replaced on every change
}{leading: map[string]bool{}, changed: make(chan struct{})}

var registerOnce sync.Once

// Install makes this package client-go's leader-election metrics provider. Call it from main,
// instead of importing k8s.io/component-base/metrics/prometheus/clientgo/leaderelection: only
// the first provider set takes effect.
func Install() {
	leaderelection.SetProvider(provider{})
}

type provider struct{}

func (provider) NewLeaderMetric() leaderelection.LeaderMetric {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(leaderGauge)
		legacyregistry.MustRegister(slowpathCounter)
	})
	update(func() { elections.electors++ })
	return metric{}
}

type metric struct{}

func (metric) On(name string) {
	leaderGauge.WithLabelValues(name).Set(1)
	update(func() { elections.leading[name] = true })
}

func (metric) Off(name string) {
	leaderGauge.WithLabelValues(name).Set(0)
	update(func() { delete(elections.leading, name) })
}

func (metric) SlowpathExercised(name string) { slowpathCounter.WithLabelValues(name).Inc() }

func update(change func()) {
	elections.mu.Lock()
	defer elections.mu.Unlock()
	change()
	close(elections.changed)
	elections.changed = make(chan struct{})
}

// holds reports whether an elector holds its lease, how many electors exist, and a channel
// closed at the next change. kube-scheduler runs one elector, which reports itself under the
// name "kube-scheduler" whatever its lease is called, so any lease held is the scheduler's.
func holds() (held bool, electors int, changed <-chan struct{}) {
	elections.mu.Lock()
	defer elections.mu.Unlock()
	return len(elections.leading) > 0, elections.electors, elections.changed
}

// Election is kube-scheduler's leader-election setting, as its configuration says.
type Election struct {
	Enabled bool
	// Lease names the lease, for the logs.
	Lease string
}

// componentConfig reads kube-scheduler's configuration from configz, where app.Run publishes it
// before it starts informers or elections; ok is false until then.
func componentConfig() (e Election, ok bool) {
	mux := http.NewServeMux()
	configz.InstallHandler(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, configz.DefaultConfigzPath, nil))
	var published struct {
		ComponentConfig *struct {
			LeaderElection struct {
				LeaderElect  *bool  `json:"leaderElect"`
				ResourceName string `json:"resourceName"`
			} `json:"leaderElection"`
		} `json:"componentconfig"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &published) != nil || published.ComponentConfig == nil {
		return Election{}, false
	}
	le := published.ComponentConfig.LeaderElection
	return Election{Enabled: le.LeaderElect != nil && *le.LeaderElect, Lease: le.ResourceName}, true
}

// The configuration is looked for every pollEvery for pollFastFor, since app.Run publishes it
// right after the plugins are built, then every pollSlowEvery: a plugin built without app.Run
// never sees it.
const (
	pollEvery     = 10 * time.Millisecond
	pollFastFor   = 10 * time.Second
	pollSlowEvery = 5 * time.Second
)

// embeddedAfter is how long the configuration may stay unpublished before a process with no
// leader elector at all is taken for an embedding (scheduler.New, as scheduler_perf builds it):
// app.Run publishes the configuration within moments of building the plugins and only then
// starts its elector, and without app.Run nothing elects, so that process is the only
// scheduler there is. A variable so tests can shorten it.
var embeddedAfter = 5 * time.Second

// Elected returns a channel closed once this process schedules: at once when leader election
// is off, else when the elector reports the lease as held. kube-scheduler exits when it loses
// its lease, so leadership, once gained, lasts for the life of the process.
func Elected(ctx context.Context) <-chan struct{} {
	elected := make(chan struct{})
	go func() {
		logger := klog.FromContext(ctx)
		election, embedded, err := awaitConfig(ctx)
		if err != nil {
			return
		}
		if embedded {
			logger.Info("Warning: kube-scheduler's configuration was never published and nothing in this process elects a leader: taking it for an embedded scheduler (scheduler.New) and scheduling as its only replica. Embedders should pass runtime.Options{Elected: runtime.WithoutElection()} to say so at once", "waited", embeddedAfter)
			close(elected)
			return
		}
		if !election.Enabled {
			logger.V(2).Info("Leader election is off: this replica schedules")
			close(elected)
			return
		}
		logger.Info("Standing by until this replica holds the lease", "lease", election.Lease)
		warned := time.After(time.Minute)
		for {
			held, electors, changed := holds()
			if held {
				logger.Info("This replica holds the lease: it schedules and writes from now on", "lease", election.Lease)
				close(elected)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-warned:
				if electors == 0 {
					logger.Error(nil, "Leader election is on but no election is reported to Repute: install the provider with leadership.Install() in main; this replica stays a standby", "lease", election.Lease)
				}
			}
		}
	}()
	return elected
}

// awaitConfig waits for kube-scheduler's configuration; embedded is true when, after
// embeddedAfter, there is none and no leader elector exists in the process.
func awaitConfig(ctx context.Context) (_ Election, embedded bool, _ error) {
	start, warned := time.Now(), false
	for {
		if e, ok := componentConfig(); ok {
			return e, false, nil
		}
		if time.Since(start) > embeddedAfter {
			if _, electors, _ := holds(); electors == 0 {
				return Election{}, true, nil
			}
		}
		delay := pollEvery
		if time.Since(start) > pollFastFor {
			if !warned {
				warned = true
				klog.FromContext(ctx).Error(nil, "kube-scheduler has not published its configuration (configz): this replica stands by until it does; run the plugin through kube-scheduler's app")
			}
			delay = pollSlowEvery
		}
		select {
		case <-ctx.Done():
			return Election{}, false, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Leading reports whether the channel from Elected is closed.
func Leading(elected <-chan struct{}) bool {
	select {
	case <-elected:
		return true
	default:
		return false
	}
}
