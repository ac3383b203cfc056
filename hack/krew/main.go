// Command krew writes reputectl's krew archives and plugin manifest (deploy/krew) to a directory.
// make krew runs it; see the Makefile for the flags it passes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/repute-dev/repute/deploy/krew"
)

func main() {
	var opts krew.Options
	var platforms, created, out string
	flag.StringVar(&opts.Version, "version", "", "release version, v-prefixed")
	flag.StringVar(&opts.URL, "url", "", "where the archives will be published")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64", "comma-separated os/arch")
	flag.StringVar(&created, "created", "", "the commit's time, RFC 3339 (git log -1 --format=%cI)")
	flag.StringVar(&opts.LDFlags, "ldflags", "", "-ldflags for go build (the version stamp)")
	flag.StringVar(&out, "out", "bin/krew", "directory to write the archives and repute.yaml to")
	flag.Parse()
	if err := run(opts, platforms, created, out); err != nil {
		fmt.Fprintln(os.Stderr, "krew:", err)
		os.Exit(1)
	}
}

func run(opts krew.Options, platforms, created, out string) error {
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	opts.Created, opts.Platforms, opts.ModuleDir = t, strings.Split(platforms, ","), "."
	built, err := krew.Build(context.Background(), opts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, archive := range built.Archives {
		if err := os.WriteFile(filepath.Join(out, name), archive, 0o644); err != nil {
			return err
		}
	}
	manifest := filepath.Join(out, krew.PluginName+".yaml")
	if err := os.WriteFile(manifest, built.Manifest, 0o644); err != nil {
		return err
	}
	fmt.Println(manifest)
	return nil
}
