# Repute: a Kubernetes secondary scheduler that isolates workloads by image reputation.
SHELL := /bin/bash
GO ?= go
K8S_VERSION ?= v1.37.1
# The test apiserver reports a real version only when these are linked in.
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION)))
BIN := bin

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
