// Package deploy embeds the manifests in base/, so that the demo and the tests create exactly
// the RBAC that ships rather than a copy of it.
package deploy

import "embed"

// Base holds base/*.yaml.
//
//go:embed base/*.yaml
var Base embed.FS
