// Command image builds the repute-scheduler image (deploy/image) and writes it as an OCI layout
// or pushes it to a registry. make image runs it; see the Makefile for the flags it passes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/repute-dev/repute/deploy/image"
)

func main() {
	var opts image.Options
	var platforms, created, layoutDir, repository, digestFile string
	flag.StringVar(&opts.Package, "package", "./cmd/repute-scheduler", "main package to build")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated os/arch")
	flag.StringVar(&opts.Version, "version", "", "release version (labels; the binary's comes from -ldflags)")
	flag.StringVar(&opts.Revision, "revision", "", "git commit")
	flag.StringVar(&opts.Source, "source", "https://github.com/repute-dev/repute", "source repository URL")
	flag.StringVar(&created, "created", "", "the commit's time, RFC 3339 (git log -1 --format=%cI)")
	flag.StringVar(&opts.LDFlags, "ldflags", "", "extra -ldflags for go build")
	flag.StringVar(&layoutDir, "layout", "", "write an OCI image layout here")
	flag.StringVar(&repository, "push", "", "push to this repository as REPOSITORY:VERSION (e.g. 127.0.0.1:5000/repute-scheduler)")
	flag.StringVar(&digestFile, "digest-file", "", "write the index's digest here (what make image-sign signs)")
	flag.Parse()
	if err := run(opts, platforms, created, layoutDir, repository, digestFile); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(opts image.Options, platforms, created, layoutDir, repository, digestFile string) error {
	if opts.Version == "" || opts.Revision == "" {
		return fmt.Errorf("-version and -revision are required")
	}
	if layoutDir == "" && repository == "" {
		return fmt.Errorf("give -layout DIR, -push REPOSITORY, or both")
	}
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	opts.Created = t
	opts.Platforms = strings.Split(platforms, ",")
	opts.ModuleDir = "."
	built, err := image.Build(context.Background(), opts)
	if err != nil {
		return err
	}
	digest, err := built.Index.Digest()
	if err != nil {
		return err
	}
	if digestFile != "" {
		if err := os.MkdirAll(filepath.Dir(digestFile), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(digestFile, []byte(digest.String()+"\n"), 0o644); err != nil {
			return err
		}
	}
	if layoutDir != "" {
		if err := built.WriteLayout(layoutDir); err != nil {
			return err
		}
		fmt.Printf("wrote %s (index %s)\n", layoutDir, digest)
	}
	if repository != "" {
		tag, err := name.NewTag(repository + ":" + opts.Version)
		if err != nil {
			return err
		}
		pushed, err := built.Push(tag, remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			return err
		}
		fmt.Println(pushed)
	}
	return nil
}
