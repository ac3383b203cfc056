package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Run is what one scheduler_perf process measured, as the report needs it.
type Run struct {
	Repeat  int    `json:"repeat"`
	Order   int    `json:"order"`   // position within the repeat, 0–3
	Profile string `json:"profile"` // Default or Repute
	Case    string `json:"case"`    // test case without the profile, and workload: SchedulingBasic/100Nodes
	// Throughput is SchedulingThroughput (pods/s): Average, Perc50, Perc90, Perc99.
	Throughput map[string]float64 `json:"throughput"`
	// Latency is scheduler_pod_scheduling_sli_duration_seconds (ms): queue entry to binding.
	Latency map[string]float64 `json:"latency,omitempty"`
	// ExtensionPoints holds each extension point's average duration (ms), all plugins together.
	ExtensionPoints map[string]float64 `json:"extensionPoints,omitempty"`
	// Plugins holds "Plugin/ExtensionPoint" average durations (ms).
	Plugins map[string]float64 `json:"plugins,omitempty"`
	// Evaluation is repute_evaluation_duration_seconds (ms) and EvaluationQueue the time images
	// waited in the evaluation queue (ms): together, the time to verdict of first-seen images.
	Evaluation      map[string]float64 `json:"evaluation,omitempty"`
	EvaluationQueue map[string]float64 `json:"evaluationQueue,omitempty"`
	Started         time.Time          `json:"started"`
	Seconds         float64            `json:"seconds"`
}

func runCommand(args []string) error {
	fs := newFlags("run")
	bin := fs.String("bin", "bin/perf.test", "the scheduler_perf test binary (go test -c ./test/perf)")
	dir := fs.String("dir", "test/perf", "directory the binary runs in (its config paths are relative to it)")
	etcdDir := fs.String("etcd-dir", "bin/tools", "directory holding the etcd binary scheduler_perf starts")
	runsFile := fs.String("runs", "docs/perf/runs.json", "runs file the results are appended to (delete a case's runs from it to replace them)")
	out := fs.String("out", "perf-results", "directory for scheduler_perf's own output")
	repeats := fs.Int("repeats", 3, "palindromic repeats of each case")
	cases := fs.String("cases", "SchedulingBasic/100Nodes,SchedulingBasic/1000Nodes,MixedTiers/1000Nodes,FirstSeenImages/100Nodes,SchedulingBasic/5000Nodes_10000Pods",
		"comma-separated test cases, without the profile prefix")
	labels := fs.String("labels", "performance", "scheduler_perf's -perf-scheduling-label-filter")
	cpuProfile := fs.Bool("cpuprofile", false, "write a CPU profile per process into -out")
	order := fs.String("order", "Default,Repute,Repute,Default", "profiles within one repeat: palindromic, so drift biases both alike")
	_ = fs.Parse(args)

	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	binary, etcd, output := abs(*bin), abs(*etcdDir), abs(*out)
	runs, err := readRuns(*runsFile)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	// A case run again adds repeats to those the runs file holds: they are numbered on from its
	// last, so the report pairs each repeat's own palindrome.
	next := map[string]int{}
	for _, r := range runs {
		next[r.Case] = max(next[r.Case], r.Repeat+1)
	}
	for i := range *repeats {
		for _, c := range strings.Split(*cases, ",") {
			repeat := next[c] + i
			for position, profile := range strings.Split(*order, ",") {
				r, err := runOne(binary, *dir, etcd, output, *labels, *cpuProfile, profile, c)
				if err != nil {
					return err
				}
				r.Repeat, r.Order = repeat, position
				runs = append(runs, r)
				fmt.Printf("repeat %d %-8s %-40s %7.1f pods/s (%.0fs)\n", repeat, profile, c, r.Throughput["Average"], r.Seconds)
				if err := writeRuns(*runsFile, runs); err != nil { // after every process: a crash loses one
					return err
				}
			}
		}
	}
	return nil
}

// runOne runs one test case of one profile in its own process and reads back its JSON.
func runOne(binary, dir, etcdDir, out, labels string, cpuProfile bool, profile, c string) (Run, error) {
	testCase, workload, ok := strings.Cut(c, "/")
	if !ok {
		return Run{}, fmt.Errorf("case %q: want TestCase/Workload", c)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return Run{}, err
	}
	itemsDir, err := os.MkdirTemp(out, strings.ReplaceAll(profile+"_"+c, "/", "_")+"-")
	if err != nil {
		return Run{}, err
	}
	args := []string{"-test.run", "^$", "-test.bench", fmt.Sprintf("^BenchmarkPerfScheduling$/^%s_%s$/^%s$", profile, testCase, workload),
		"-test.benchtime", "1x", "-test.timeout", "60m", "-perf-scheduling-label-filter", labels, "-data-items-dir", itemsDir}
	if cpuProfile {
		args = append(args, "-perf-cpuprofile")
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+etcdDir+string(os.PathListSeparator)+os.Getenv("PATH"), "ARTIFACTS="+itemsDir)
	log, err := os.Create(filepath.Join(itemsDir, "output.log"))
	if err != nil {
		return Run{}, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	started := time.Now()
	if err := cmd.Run(); err != nil {
		return Run{}, fmt.Errorf("%s %s: %v (see %s)", profile, c, err, log.Name())
	}
	r, err := readDataItems(itemsDir)
	if err != nil {
		return Run{}, fmt.Errorf("%s %s: %w", profile, c, err)
	}
	r.Profile, r.Case, r.Started, r.Seconds = profile, c, started.UTC().Truncate(time.Second), time.Since(started).Seconds()
	return r, nil
}

// dataItems is scheduler_perf's JSON output.
type dataItems struct {
	DataItems []struct {
		Data   map[string]float64 `json:"data"`
		Unit   string             `json:"unit"`
		Labels map[string]string  `json:"labels"`
	} `json:"dataItems"`
}

func readDataItems(dir string) (Run, error) {
	files, err := filepath.Glob(filepath.Join(dir, "BenchmarkPerfScheduling_benchmark_*.json"))
	if err != nil || len(files) != 1 {
		return Run{}, fmt.Errorf("want one scheduler_perf JSON file in %s, found %d (%v)", dir, len(files), err)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		return Run{}, err
	}
	var items dataItems
	if err := json.Unmarshal(raw, &items); err != nil {
		return Run{}, fmt.Errorf("%s: %w", files[0], err)
	}
	r := Run{ExtensionPoints: map[string]float64{}, Plugins: map[string]float64{}}
	for _, it := range items.DataItems {
		switch it.Labels["Metric"] {
		case "SchedulingThroughput":
			r.Throughput = it.Data
		case "scheduler_pod_scheduling_sli_duration_seconds":
			r.Latency = it.Data
		case "scheduler_framework_extension_point_duration_seconds":
			r.ExtensionPoints[it.Labels["extension_point"]] = it.Data["Average"]
		case "scheduler_plugin_execution_duration_seconds":
			r.Plugins[it.Labels["plugin"]+"/"+it.Labels["extension_point"]] = it.Data["Average"]
		case "repute_evaluation_duration_seconds":
			r.Evaluation = it.Data
		case "repute_evaluation_queue_wait_seconds", "workqueue_queue_duration_seconds": // the latter before 2026-12-01
			r.EvaluationQueue = it.Data
		}
	}
	if r.Throughput == nil {
		return Run{}, fmt.Errorf("%s has no SchedulingThroughput", files[0])
	}
	return r, nil
}

func readRuns(file string) ([]Run, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var runs []Run
	if err := json.Unmarshal(raw, &runs); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return runs, nil
}

func writeRuns(file string, runs []Run) error {
	raw, err := json.MarshalIndent(runs, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, append(raw, '\n'), 0o644)
}
