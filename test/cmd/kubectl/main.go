// Command kubectl is the real kubectl, built from k8s.io/kubectl at the version the module graph
// pins, for the tests that run the README's commands as a user would type them.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
