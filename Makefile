# Repute: a Kubernetes secondary scheduler that isolates workloads by image reputation.
SHELL := /bin/bash
GO ?= go
K8S_VERSION ?= v1.37.1
# The test apiserver reports a real version only when these are linked in.
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION)))
BIN := bin
# One version for the binaries and the image, from git: the nearest v* tag (and how far past it),
# or v0.1.0-dev-<commit> before the first release; -dirty when the tree has changes.
VERSION ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.1.0-dev-$$(git rev-parse --short=12 HEAD)$$(git diff --quiet HEAD || echo -dirty))
REVISION ?= $(shell git rev-parse HEAD)$(shell git diff --quiet HEAD || echo -dirty)
VERSION_LDFLAGS := -X github.com/repute-dev/repute/pkg/version.version=$(VERSION) \
	-X github.com/repute-dev/repute/pkg/version.revision=$(REVISION)

PKGS := ./...
# The real cosign CLI signs images in the signature tests; it is built from the module proxy.
COSIGN_VERSION ?= v3.1.3
COSIGN := $(CURDIR)/$(BIN)/tools/cosign

.PHONY: all build tools test soak perf perf-report demo demo-keep bench fuzz fuzz-long verify codegen clean image image-sign bundle krew
all: build

## build: the repute-scheduler, reputectl (also as the kubectl plugin kubectl-repute) and repute-demo binaries, in bin/
build:
	$(GO) build -ldflags "$(K8S_LDFLAGS) $(VERSION_LDFLAGS)" -o $(BIN)/repute-scheduler ./cmd/repute-scheduler
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/reputectl ./cmd/reputectl
	ln -sf reputectl $(BIN)/kubectl-repute
	$(GO) build -ldflags "$(K8S_LDFLAGS)" -o $(BIN)/repute-demo ./test/cmd/repute-demo

## image: the repute-scheduler image for linux/amd64 and linux/arm64, static and nonroot, with an
## SPDX SBOM per platform, built without a container engine (deploy/image). It is written as an
## OCI layout in bin/image, and pushed as $(REGISTRY)/repute-scheduler:$(VERSION) when REGISTRY is
## set. Reproducible: the same commit gives the same digest.
REGISTRY ?=
PLATFORMS ?= linux/amd64,linux/arm64
image:
	$(GO) run ./hack/image -version $(VERSION) -revision $(REVISION) -created $$(git log -1 --format=%cI) \
		-platforms $(PLATFORMS) -ldflags "$(K8S_LDFLAGS) $(VERSION_LDFLAGS)" -layout $(BIN)/image \
		-digest-file $(BIN)/image.digest $(if $(REGISTRY),-push $(REGISTRY)/repute-scheduler)

## krew: reputectl as the kubectl plugin "repute": an archive per platform and the krew plugin
## manifest naming them (bin/krew/repute.yaml), for archives published under KREW_URL.
KREW_URL ?= https://github.com/repute-dev/repute/releases/download/$(VERSION)
KREW_PLATFORMS ?= linux/amd64,linux/arm64,darwin/amd64,darwin/arm64
krew:
	$(GO) run ./hack/krew -version $(VERSION) -url $(KREW_URL) -created $$(git log -1 --format=%cI) \
		-platforms $(KREW_PLATFORMS) -ldflags "$(K8S_LDFLAGS) $(VERSION_LDFLAGS)" -out $(BIN)/krew

## image-sign: sign the pushed image with cosign and the operator's key (KEY=cosign.key or a KMS
## URI), offline: no transparency log. Repute verifies it like any other image.
KEY ?= cosign.key
image-sign: $(COSIGN)
	@test -n "$(REGISTRY)" || { echo "image-sign: set REGISTRY to where make image pushed"; exit 1; }
	$(COSIGN) sign --key $(KEY) --tlog-upload=false --use-signing-config=false \
		$(REGISTRY)/repute-scheduler@$$(cat $(BIN)/image.digest)

## bundle: deploy/repute.yaml, the chart rendered with its defaults, CRDs first (a test checks it is current)
bundle:
	$(GO) run ./hack/bundle

## tools: the cosign CLI the signature tests sign with (one cold build, about 10 minutes)
tools: $(COSIGN)
$(COSIGN):
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN_VERSION)

# promtool checks and unit-tests the shipped alert rules: Debian's (apt-get install prometheus,
# as CI does) when on PATH, else built once from the module proxy.
PROMETHEUS_VERSION ?= v0.316.0
PROMTOOL := $(or $(shell command -v promtool),$(CURDIR)/$(BIN)/tools/promtool)
$(CURDIR)/$(BIN)/tools/promtool:
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)

# The README's install commands run in a test with the real kubectl (k8s.io/kubectl at the
# version the module graph pins) and the real helm CLI.
HELM_VERSION ?= v3.22.0
KUBECTL := $(CURDIR)/$(BIN)/tools/kubectl
HELM := $(CURDIR)/$(BIN)/tools/helm
$(KUBECTL): go.mod
	$(GO) build -ldflags "$(K8S_LDFLAGS)" -o $(KUBECTL) ./test/cmd/kubectl
$(HELM):
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# scheduler_perf starts the etcd binary it finds on PATH; this one is built from the module graph.
ETCD := $(CURDIR)/$(BIN)/tools/etcd
$(ETCD): go.mod
	$(GO) build -o $(ETCD) go.etcd.io/etcd/server/v3

PERF_BIN := $(CURDIR)/$(BIN)/perf.test
.PHONY: $(PERF_BIN)
$(PERF_BIN):
	$(GO) test -c -o $(PERF_BIN) ./test/perf/

## test: unit, integration (real etcd + kube-apiserver + scheduler, real registry, real cosign) and deploy tests,
## then scheduler_perf's 100-node workload once under each profile (the smoke run of make perf)
test: $(COSIGN) $(ETCD) $(PERF_BIN) $(PROMTOOL) $(KUBECTL) $(HELM)
	$(GO) build -o $(BIN)/repute-scheduler ./cmd/repute-scheduler
	REPUTE_SCHEDULER_BIN=$(CURDIR)/$(BIN)/repute-scheduler COSIGN=$(COSIGN) REPUTE_REQUIRE_COSIGN=1 \
		PROMTOOL=$(PROMTOOL) REPUTE_REQUIRE_PROMTOOL=1 REPUTE_REQUIRE_CLIS=1 \
		$(GO) test -ldflags "$(K8S_LDFLAGS)" -count=1 -timeout 30m $(PKGS)
	rm -rf $(BIN)/perf-smoke
	$(GO) run ./test/cmd/repute-perf run -bin $(PERF_BIN) -etcd-dir $(BIN)/tools -runs $(BIN)/perf-smoke/runs.json \
		-out $(BIN)/perf-smoke -repeats 1 -order Default,Repute -labels smoke -cases SchedulingBasic/100Nodes

## soak: the flood and fault tests at full size (make test runs a short version of each)
SOAK ?= TestKilledSchedulerLosesNoDecision|TestFloodDoesNotStarveOtherNamespaces|TestForgottenFloodCostsNothing|TestWarmStartFromALargeStore|TestLeaderKilledDuringBurst|TestControlPlaneRestartsMidBurst|TestPolicyChangeReTiersRunningPodsUnderEvict
soak: $(COSIGN)
	$(GO) build -o $(BIN)/repute-scheduler ./cmd/repute-scheduler
	REPUTE_SOAK=1 REPUTE_SCHEDULER_BIN=$(CURDIR)/$(BIN)/repute-scheduler COSIGN=$(COSIGN) REPUTE_REQUIRE_COSIGN=1 \
		$(GO) test -count=1 -timeout 60m -v -run '$(SOAK)' ./pkg/engine/ ./test/integration/

## perf: the scheduler_perf campaign, Repute against the default profile (see docs/performance.md);
## PERF_CASES, PERF_REPEATS narrow it. Results are appended to docs/perf/runs.json, then the page is rebuilt.
PERF_REPEATS ?= 3
PERF_CASES ?= SchedulingBasic/100Nodes,SchedulingBasic/1000Nodes,MixedTiers/1000Nodes,FirstSeenImages/100Nodes,SchedulingBasic/5000Nodes_10000Pods
perf: $(ETCD) $(PERF_BIN) $(COSIGN)
	COSIGN=$(COSIGN) $(GO) run ./test/cmd/repute-perf run -bin $(PERF_BIN) -etcd-dir $(BIN)/tools -runs docs/perf/runs.json \
		-out $(BIN)/perf-results -repeats $(PERF_REPEATS) -cases $(PERF_CASES)
	$(MAKE) perf-report

## perf-report: regenerate docs/performance.md and its plots from docs/perf/runs.json
perf-report:
	mkdir -p docs/perf
	$(GO) run ./test/cmd/repute-perf report -runs docs/perf/runs.json -out docs

## demo: the README's first command
demo: $(COSIGN)
	COSIGN=$(COSIGN) $(GO) run -ldflags "$(K8S_LDFLAGS)" ./test/cmd/repute-demo

## demo-keep: the demo, left running with a kubeconfig for kubectl
demo-keep: $(COSIGN)
	COSIGN=$(COSIGN) $(GO) run -ldflags "$(K8S_LDFLAGS)" ./test/cmd/repute-demo -keep

## bench: per-call plugin benchmarks and full scheduling-cycle ratios against the default profile
BENCH ?= .
BENCHTIME ?= 1s
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) ./plugins/... ./reputation/... ./pkg/engine/... ./test/bench/...

## fuzz: each fuzz target for FUZZTIME (seed corpora also run in make test)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseImageRef$$' -fuzztime $(FUZZTIME) ./reputation/
	$(GO) test -run '^$$' -fuzz '^FuzzMatchOrigin$$' -fuzztime $(FUZZTIME) ./reputation/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeArgs$$' -fuzztime $(FUZZTIME) ./pkg/apis/config/scheme/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckBundle$$' -fuzztime $(FUZZTIME) ./pkg/sources/signature/
	$(GO) test -run '^$$' -fuzz '^FuzzKeychainOf$$' -fuzztime $(FUZZTIME) ./pkg/sources/signature/
	$(GO) test -run '^$$' -fuzz '^FuzzParseReport$$' -fuzztime $(FUZZTIME) ./pkg/sources/trivy/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAlerts$$' -fuzztime $(FUZZTIME) ./pkg/sources/behavior/
	$(GO) test -run '^$$' -fuzz '^FuzzParseQuery$$' -fuzztime $(FUZZTIME) ./pkg/audit/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeProposedPolicy$$' -fuzztime $(FUZZTIME) ./pkg/audit/
	$(GO) test -run '^$$' -fuzz '^FuzzReadPolicy$$' -fuzztime $(FUZZTIME) ./pkg/reputectl/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/mirror/

## fuzz-long: every fuzz target for at least 10 minutes (about 110 minutes in all)
fuzz-long:
	$(MAKE) fuzz FUZZTIME=10m

## codegen: regenerate deepcopy, defaults and conversions (k8s.io/code-generator) and the CRD (controller-gen)
codegen:
	GO=$(GO) hack/update-codegen.sh

## verify: gofmt, go vet, go mod tidy leaves no diff, and generated files are current
verify:
	@hack/update-codegen.sh >/dev/null; \
	if ! git diff --quiet -- pkg/apis deploy/crds || [ -n "$$(git ls-files --others --exclude-standard pkg/apis deploy/crds)" ]; then \
	  git status --short -- pkg/apis deploy/crds; echo "generated files are stale: run make codegen and commit"; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@cp go.mod /tmp/repute-go.mod.bak; cp go.sum /tmp/repute-go.sum.bak; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod /tmp/repute-go.mod.bak || ! cmp -s go.sum /tmp/repute-go.sum.bak; then \
	  diff -u /tmp/repute-go.mod.bak go.mod; \
	  cp /tmp/repute-go.mod.bak go.mod; cp /tmp/repute-go.sum.bak go.sum; \
	  echo "go mod tidy changes go.mod/go.sum"; exit 1; fi

clean:
	rm -rf $(BIN)

.PHONY: upgrade-k8s
# upgrade-k8s pins k8s.io/kubernetes at VERSION and rewrites the replace block so that every
# staging module it requires at v0.0.0 points at the matching v0.X.Y release.
upgrade-k8s:
	@test -n "$(VERSION)" || { echo "usage: make upgrade-k8s VERSION=v1.37.x" >&2; exit 2; }
	@set -euo pipefail; \
	mod=$$($(GO) mod download -json k8s.io/kubernetes@$(VERSION) | sed -n 's/^\t"GoMod": "\(.*\)",$$/\1/p'); \
	staging=$$(sed -n 's/^\t\(k8s.io\/[a-z0-9-]*\) v0.0.0$$/\1/p' "$$mod" | sort -u); \
	test -n "$$staging" || { echo "no staging modules found in $$mod" >&2; exit 1; }; \
	ver=v0.$${VERSION#v1.}; \
	args=(); for m in $$staging; do args+=("-replace=$$m=$$m@$$ver"); done; \
	$(GO) mod edit -require=k8s.io/kubernetes@$(VERSION) "$${args[@]}"; \
	echo "k8s.io/kubernetes $(VERSION): replaced $$(echo "$$staging" | wc -l) staging modules at $$ver"; \
	$(GO) mod tidy
