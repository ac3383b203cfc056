// Package deploy embeds the manifests in base/, crds/ and isolation/, so that the demo and the
// tests create exactly what ships rather than copies of it.
package deploy

import "embed"

// Files holds the base/, crds/ and isolation/ manifests.
//
//go:embed base/*.yaml crds/*.yaml isolation/*.yaml
var Files embed.FS
