// Package version says which Repute this is. make stamps the release and the commit from git at
// build time; a plain go build still knows its commit (Go records it) and the Kubernetes it was
// built against (from its module list).
package version

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Stamped with -ldflags "-X github.com/repute-dev/repute/pkg/version.version=... -X ...revision=...".
var (
	version  = ""
	revision = ""
)

// Info is one build's identity, as --version, reputectl version and the audit API's /version
// print it.
type Info struct {
	// Version is the release (git describe), or v0.0.0-dev when the build was not stamped.
	Version string `json:"version"`
	// Revision is the git commit the build came from, with "-dirty" when the tree had changes.
	Revision string `json:"revision"`
	// Kubernetes is the version of the scheduler framework compiled in (k8s.io/kubernetes).
	Kubernetes string `json:"kubernetes,omitempty"`
	GoVersion  string `json:"goVersion"`
	Platform   string `json:"platform"`
}

// Get returns this build's Info.
func Get() Info {
	info := Info{Version: version, Revision: revision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if build, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range build.Deps {
			if dep.Path == "k8s.io/kubernetes" {
				info.Kubernetes = dep.Version
			}
		}
		if info.Revision == "" {
			info.Revision = fromVCS(build.Settings)
		}
	}
	if info.Version == "" {
		info.Version = "v0.0.0-dev"
	}
	return info
}

// fromVCS reads the commit Go recorded when it built inside a git checkout.
func fromVCS(settings []debug.BuildSetting) string {
	var rev string
	dirty := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// String is the one line --version prints.
func (i Info) String() string {
	s := fmt.Sprintf("%s (revision %s, %s %s", i.Version, orUnknown(i.Revision), i.GoVersion, i.Platform)
	if i.Kubernetes != "" {
		s += ", kube-scheduler " + i.Kubernetes
	}
	return s + ")"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// TakeOverFlag makes a kube-scheduler command's --version print Repute's Info instead of the
// Kubernetes version alone (which it still shows, as the framework compiled in).
// --version=raw prints it as JSON.
func TakeOverFlag(command *cobra.Command) {
	run := command.RunE
	command.RunE = func(cmd *cobra.Command, args []string) error {
		if f := cmd.Flags().Lookup("version"); f != nil && f.Value.String() != "false" {
			info := Get()
			if f.Value.String() == "raw" {
				out, err := json.MarshalIndent(info, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
				return err
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), command.Name()+" "+info.String())
			return err
		}
		return run(cmd, args)
	}
}
