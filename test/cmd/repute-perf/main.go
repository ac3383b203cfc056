// Command repute-perf runs the scheduler_perf campaign that compares Repute with the default
// profile, and turns its results into docs/performance.md.
//
//	repute-perf run    -bin bin/perf.test -runs docs/perf/runs.json [-repeats 3] [-cases ...]
//	repute-perf report -runs docs/perf/runs.json -out docs
//
// run starts one process per test case, in palindromic order within each repeat (Default,
// Repute, Repute, Default): a workload's position in a process, and the machine's drift over a
// campaign, then bias both profiles alike. Each process writes scheduler_perf's JSON; run keeps
// the figures the report needs from it, one record per process, in the runs file. report reads
// only the runs file, so the page can be regenerated without running anything.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: repute-perf run|report [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = runCommand(args)
	case "report":
		err = reportCommand(args)
	default:
		err = fmt.Errorf("unknown command %q: want run or report", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "repute-perf:", err)
		os.Exit(1)
	}
}

func newFlags(name string) *flag.FlagSet {
	return flag.NewFlagSet("repute-perf "+name, flag.ExitOnError)
}
