// Command bundle writes deploy/repute.yaml from the Helm chart (make bundle).
package main

import (
	"fmt"
	"os"

	"github.com/repute-dev/repute/deploy"
)

func main() {
	bundle, err := deploy.Bundle()
	if err == nil {
		err = os.WriteFile("deploy/repute.yaml", []byte(bundle), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}
