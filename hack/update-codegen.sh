#!/usr/bin/env bash
# Regenerates what is generated: deepcopy, defaulting and conversion of the args and of the
# repute.dev/v1alpha1 API (k8s.io/code-generator), and the ReputationPolicy CRD from the API's
# types and doc comments (controller-gen). The generators are pinned and built into bin/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
TOOLS=${TOOLS:-$PWD/bin/tools}
CODEGEN_VERSION=v0.37.1
CONTROLLER_TOOLS_VERSION=v0.23.0

install() { # install <binary> <package@version>
  [ -x "$TOOLS/$1" ] && [ "$(cat "$TOOLS/.$1.version" 2>/dev/null)" = "$2" ] && return
  GOBIN="$TOOLS" GOFLAGS=-mod=mod "$GO" install "$2"
  echo "$2" > "$TOOLS/.$1.version"
}
install deepcopy-gen k8s.io/code-generator/cmd/deepcopy-gen@$CODEGEN_VERSION
install defaulter-gen k8s.io/code-generator/cmd/defaulter-gen@$CODEGEN_VERSION
install conversion-gen k8s.io/code-generator/cmd/conversion-gen@$CODEGEN_VERSION
install controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION

module=github.com/repute-dev/repute
header=hack/boilerplate.go.txt
"$TOOLS/deepcopy-gen" --go-header-file "$header" --output-file zz_generated.deepcopy.go \
  ./pkg/apis/config ./pkg/apis/config/v1 ./pkg/apis/repute/v1alpha1
"$TOOLS/defaulter-gen" --go-header-file "$header" --output-file zz_generated.defaults.go \
  --extra-peer-dirs "$module/pkg/apis/repute/v1alpha1" \
  ./pkg/apis/config/v1 ./pkg/apis/repute/v1alpha1
# The args' policy block is the API's PolicySpec: its conversions come from the API's package.
"$TOOLS/conversion-gen" --go-header-file "$header" --output-file zz_generated.conversion.go \
  ./pkg/apis/repute/v1alpha1
"$TOOLS/conversion-gen" --go-header-file "$header" --output-file zz_generated.conversion.go \
  --extra-peer-dirs "$module/pkg/apis/repute/v1alpha1" \
  ./pkg/apis/config/v1
"$TOOLS/controller-gen" crd:crdVersions=v1 paths=./pkg/apis/repute/v1alpha1 output:crd:dir=deploy/crds
