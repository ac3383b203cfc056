// Package deploy embeds the manifests in base/ and crds/, so that the demo and the tests create
// exactly the RBAC and CustomResourceDefinitions that ship rather than copies of them.
package deploy

import "embed"

// Files holds base/*.yaml and crds/*.yaml.
//
//go:embed base/*.yaml crds/*.yaml
var Files embed.FS
