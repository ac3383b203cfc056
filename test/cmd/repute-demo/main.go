// Command repute-demo runs Repute end to end on this machine: an embedded etcd and
// kube-apiserver, a loopback OCI registry and the real Repute scheduler.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/repute-dev/repute/test/demo"
)

func main() {
	keep := flag.Bool("keep", false, "keep the cluster running and write a kubeconfig, until Ctrl-C")
	kubeconfig := flag.String("kubeconfig-out", "repute-demo.kubeconfig", "where -keep writes the kubeconfig")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Out: os.Stdout, Keep: *keep, KubeconfigPath: *kubeconfig}); err != nil {
		fmt.Fprintln(os.Stderr, "repute-demo:", err)
		os.Exit(1)
	}
}
