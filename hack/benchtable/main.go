// Command benchtable turns `go test -bench -benchmem` output from interleaved runs of two builds
// into a Markdown table: per benchmark, the min/median/max of ns/op for each build, their
// allocations, and the ratio of the medians. Usage:
//
//	benchtable -a before -b after before-1.txt after-1.txt after-2.txt before-2.txt
//
// A file counts for a build when its name starts with that build's label.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// result is one benchmark line's measurements.
type result struct{ nsPerOp, bytesPerOp, allocsPerOp float64 }

var line = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:.*?\s([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

// parse reads benchmark lines, by name: a benchmark that moved to another package between the
// builds still compares with itself.
func parse(r io.Reader, into map[string][]result) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var res result
		res.nsPerOp, _ = strconv.ParseFloat(m[2], 64)
		res.bytesPerOp, _ = strconv.ParseFloat(m[3], 64)
		res.allocsPerOp, _ = strconv.ParseFloat(m[4], 64)
		into[m[1]] = append(into[m[1]], res)
	}
	return sc.Err()
}

func stats(rs []result) (lo, med, hi float64) {
	ns := make([]float64, len(rs))
	for i, r := range rs {
		ns[i] = r.nsPerOp
	}
	slices.Sort(ns)
	n := len(ns)
	med = ns[n/2]
	if n%2 == 0 {
		med = (ns[n/2-1] + ns[n/2]) / 2
	}
	return ns[0], med, ns[n-1]
}

func format(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.1f ns", ns)
	}
}

func main() {
	a := flag.String("a", "before", "label of the first build")
	b := flag.String("b", "after", "label of the second build")
	flag.Parse()
	runs := map[string]map[string][]result{*a: {}, *b: {}}
	for _, path := range flag.Args() {
		label := *b
		if strings.HasPrefix(filepath.Base(path), *a) {
			label = *a
		}
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		err = parse(f, runs[label])
		f.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var names []string
	for name := range runs[*a] {
		if _, ok := runs[*b][name]; ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	fmt.Printf("| benchmark | %s min / median / max | allocs | %s min / median / max | allocs | median %s/%s |\n", *a, *b, *b, *a)
	fmt.Println("|---|---|---|---|---|---|")
	for _, name := range names {
		alo, amed, ahi := stats(runs[*a][name])
		blo, bmed, bhi := stats(runs[*b][name])
		fmt.Printf("| %s | %s / %s / %s | %.0f | %s / %s / %s | %.0f | %.2f |\n", strings.TrimPrefix(name, "Benchmark"),
			format(alo), format(amed), format(ahi), runs[*a][name][0].allocsPerOp,
			format(blo), format(bmed), format(bhi), runs[*b][name][0].allocsPerOp, bmed/amed)
	}
	for label, rs := range runs {
		for name := range rs {
			if !slices.Contains(names, name) {
				fmt.Fprintf(os.Stderr, "only in %s: %s\n", label, name)
			}
		}
	}
}
