// Package deploy embeds the manifests in base/, crds/, isolation/ and monitoring/, so that the
// demo and the tests create exactly what ships rather than copies of it.
package deploy

import "embed"

// Files holds the base/, crds/, isolation/ and monitoring/ manifests.
//
//go:embed base/*.yaml crds/*.yaml isolation/*.yaml monitoring/*.yaml monitoring/*.json
var Files embed.FS
