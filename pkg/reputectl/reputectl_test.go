package reputectl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

var (
	apiRef   = "registry.internal/team/api@sha256:" + strings.Repeat("a", 64)
	redisRef = "docker.io/bitnami/redis:7.2"
	t0       = time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
)

// storeFile writes a store with two images, a verdict change, decisions in two namespaces and
// two policy versions, and closes it, as a backup would be.
func storeFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "repute.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verdicts := []*reputation.Verdict{
		{Image: apiRef, Key: apiRef, Tier: reputation.TierUnknown, Score: 60, DecidedBy: "score 60 between thresholds", PolicyVersion: "v1", EvaluatedAt: t0},
		{Image: apiRef, Key: apiRef, Tier: reputation.TierTrusted, Score: 90, DecidedBy: "score 90 ≥ trusted threshold 70", PolicyVersion: "v2", EvaluatedAt: t0.Add(time.Hour),
			Contributions: []reputation.Contribution{
				{Signal: reputation.SignalOrigin, Observed: "registry registry.internal", Points: 10, Rule: "origin.rules[0] registry.internal/*"},
				{Signal: reputation.SignalSignature, Observed: "verified by key ops", Points: 30, Finding: "verified"},
			}},
		{Image: redisRef, Key: redisRef, Tier: reputation.TierUntrusted, Score: 20, DecidedBy: "behavior: Falco Critical", PolicyVersion: "v2", EvaluatedAt: t0},
	}
	for _, v := range verdicts {
		if err := st.AppendVerdict(ctx, v.Image, v); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 6 {
		ns := []string{"team", "other"}[i%2]
		if err := st.AppendDecisions(ctx, store.Decision{Time: t0.Add(time.Duration(i) * time.Minute), Namespace: ns,
			Pod: fmt.Sprintf("p%d", i), Node: "n1", Pool: "trusted", Tier: reputation.TierTrusted, Score: 90, Reason: "score 90"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"v1", "v2"} {
		if err := st.AppendPolicy(ctx, store.PolicyRecord{Time: t0, Version: v, Source: "plugin args",
			Policy: json.RawMessage(`{"baseScore":50,"version":"` + v + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand("reputectl", &out, &errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestCommandsReadAStoreFile(t *testing.T) {
	file := storeFile(t)
	tests := []struct {
		name    string
		args    []string
		want    []string // in order
		notWant []string
	}{
		// Tables cut digests to 12 digits; -o wide shows them whole.
		{"images table", []string{"images"}, []string{"IMAGE", "TIER", "SCORE", redisRef, "untrusted", "20", apiRef[:len(apiRef)-52] + "…", "trusted", "90"}, []string{apiRef}},
		{"images wide", []string{"images", "-o", "wide"}, []string{apiRef}, nil},
		{"images by tier", []string{"images", "--tier", "trusted"}, []string{"api@sha256"}, []string{redisRef}},
		{"images by registry", []string{"images", "--registry", "docker.io"}, []string{redisRef}, []string{apiRef}},
		{"image explained", []string{"image", "sha256:" + strings.Repeat("a", 64)},
			[]string{"Image:", apiRef, "Tier:", "trusted", "Score:", "90", "Decided by:", "score 90 ≥ trusted threshold 70",
				"Policy version:", "v2", "Evidence:", "origin", "+10", "registry registry.internal", "origin.rules[0] registry.internal/*",
				"signature", "+30", "verified by key ops"}, nil},
		{"history oldest first", []string{"history", apiRef}, []string{"TIME", "unknown", "60", "v1", "trusted", "90", "v2", "signature verified…"}, nil},
		{"history wide", []string{"history", apiRef, "-o", "wide"}, []string{"signature verified +30"}, nil},
		{"decisions leave the reason to -o wide", []string{"decisions"}, []string{"TIME", "SCORE"}, []string{"REASON"}},
		{"decisions wide", []string{"decisions", "-o", "wide"}, []string{"REASON", "score 90"}, nil},
		{"history from a time", []string{"history", apiRef, "--from", "90m"}, []string{"trusted"}, []string{"unknown"}},
		{"decisions in every namespace by default offline", []string{"decisions"}, []string{"team", "p0", "other", "p1", "p5"}, nil},
		{"decisions of one namespace", []string{"decisions", "-n", "other"}, []string{"p1", "p3", "p5"}, []string{"p0", "p2"}},
		{"policy in force", []string{"policy", "show"}, []string{"Version:", "v2", "Source:", "plugin args", "Policy:", "baseScore: 50"}, nil},
		{"earlier policy", []string{"policy", "show", "v1"}, []string{"v1"}, []string{"v2"}},
		{"policy versions", []string{"policy", "versions"}, []string{"VERSION", "v1", "v2"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := run(t, append([]string{"--store", file}, tt.args...)...)
			if err != nil {
				t.Fatalf("reputectl %v: %v (%s)", tt.args, err, stderr)
			}
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order):\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestOutputFormatsAreTheAPIObjects(t *testing.T) {
	file := storeFile(t)
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			out, _, err := run(t, "--store", file, "images", "-o", format)
			if err != nil {
				t.Fatal(err)
			}
			var list audit.ImageList
			if err := yaml.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("%s output does not decode: %v\n%s", format, err, out)
			}
			if list.Kind != "ImageList" || list.APIVersion != "audit.repute.dev/v1" || len(list.Items) != 2 || list.Items[0].Verdict == nil {
				t.Errorf("decoded %+v, want an ImageList of 2 verdicts", list)
			}
		})
	}
}

// A long list stops at --limit, says so on stderr, and reads every page with --limit 0.
func TestLimitAndPaging(t *testing.T) {
	file := storeFile(t)
	out, stderr, err := run(t, "--store", file, "decisions", "--limit", "4", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list audit.DecisionList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 4 || !strings.Contains(stderr, "showing the first 4") {
		t.Errorf("--limit 4: %d items, stderr %q", len(list.Items), stderr)
	}
}

// collect follows continue tokens across pages smaller than asked for, and stops at the limit.
func TestCollectFollowsContinueTokens(t *testing.T) {
	data := []int{0, 1, 2, 3, 4, 5, 6}
	var requests int
	page := func(q url.Values) ([]int, string, error) {
		requests++
		start, _ := strconv.Atoi(q.Get("continue"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		end := min(len(data), start+min(limit, 2)) // the server's pages hold 2
		next := ""
		if end < len(data) {
			next = strconv.Itoa(end)
		}
		return data[start:end], next, nil
	}
	tests := []struct {
		limit, wantLen int
		wantMore       bool
	}{
		{0, 7, false},
		{5, 5, true},
		{7, 7, false},
		{1, 1, true},
	}
	for _, tt := range tests {
		requests = 0
		got, more, err := collect(url.Values{"tier": {"trusted"}}, tt.limit, page)
		if err != nil || len(got) != tt.wantLen || more != tt.wantMore || !slices.Equal(got, data[:tt.wantLen]) {
			t.Errorf("limit %d: %v more=%v err=%v, want the first %d, more=%v", tt.limit, got, more, err, tt.wantLen, tt.wantMore)
		}
		if want := (tt.wantLen + 1) / 2; requests != want {
			t.Errorf("limit %d: %d requests, want %d", tt.limit, requests, want)
		}
	}
}

// kubeconfig writes a kubeconfig with a token user, for tests that stop before any request.
func kubeconfig(t *testing.T) string {
	t.Helper()
	return writeKubeconfig(t, &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}, &clientcmdapi.AuthInfo{Token: "t"}, "team")
}

// writeKubeconfig writes a kubeconfig with one context: the cluster, the user and a namespace.
func writeKubeconfig(t *testing.T, cluster *clientcmdapi.Cluster, user *clientcmdapi.AuthInfo, namespace string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = cluster
	kc.AuthInfos["u"] = user
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u", Namespace: namespace}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBadInputIsRefusedClearly(t *testing.T) {
	file := storeFile(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad tier is the server's 400", []string{"--store", file, "images", "--tier", "gold"}, `"tier"`},
		{"bad score", []string{"--store", file, "images", "--min-score", "high"}, `"minScore"`},
		{"bad time", []string{"--store", file, "history", apiRef, "--from", "yesterday"}, "--from \"yesterday\": want an RFC 3339 time"},
		{"unknown image", []string{"--store", file, "image", "quay.io/none/such:1"}, "not found"},
		{"unknown policy version", []string{"--store", file, "policy", "show", "v9"}, `policy version "v9" was never in force`},
		{"bad output", []string{"--store", file, "-o", "xml", "images"}, `--output "xml"`},
		{"missing store file", []string{"--store", filepath.Join(t.TempDir(), "none.db"), "images"}, "no such file"},
		{"not https", []string{"--kubeconfig", kubeconfig(t), "--audit-server", "http://x:1", "images"}, "must be an https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// reputectl never offers to skip verifying the audit API's certificate: --audit-ca is the way.
func TestNoFlagSkipsTLSVerification(t *testing.T) {
	var out, errOut bytes.Buffer
	cmd := NewCommand("reputectl", &out, &errOut)
	var offenders []string
	check := func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if text := strings.ToLower(f.Name + " " + f.Usage); strings.Contains(text, "insecure") || strings.Contains(text, "skip-tls") || strings.Contains(text, "do not verify") {
					offenders = append(offenders, c.Name()+" --"+f.Name)
				}
			})
		}
	}
	check(cmd)
	for _, sub := range cmd.Commands() {
		check(sub)
	}
	if len(offenders) > 0 {
		t.Errorf("flags that skip or suggest skipping TLS verification: %v", offenders)
	}
}

// An empty list says so on stderr in the table formats, as kubectl does, and is an empty list in
// JSON; a policy diff that cannot be made exits 2, so that 1 keeps meaning "they differ".
func TestEmptyListsAndDiffFailures(t *testing.T) {
	file := storeFile(t)
	for _, output := range []string{"table", "wide"} {
		out, stderr, err := run(t, "--store", file, "decisions", "-n", "nobody", "-o", output)
		if err != nil || out != "" || stderr != "No resources found.\n" {
			t.Errorf("-o %s: stdout %q, stderr %q, %v; want only \"No resources found.\" on stderr", output, out, stderr, err)
		}
	}
	out, _, err := run(t, "--store", file, "decisions", "-n", "nobody", "-o", "json")
	if err != nil || !strings.Contains(out, `"items": []`) {
		t.Errorf("-o json: %q, %v; want an empty list", out, err)
	}
	_, _, err = run(t, "--store", file, "policy", "diff", "-f", filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || ExitCode(err) != 2 {
		t.Errorf("diff of a missing file: %v, exit %d; want exit 2", err, ExitCode(err))
	}
}

// kubectl's output formats: -o name, jsonpath, custom-columns, go-template, and --no-headers.
func TestKubectlOutputFormats(t *testing.T) {
	file := storeFile(t)
	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{"jsonpath", []string{"images", "-o", "jsonpath={.items[*].ref}"}, []string{redisRef + " " + apiRef}, []string{"IMAGE"}},
		{"custom-columns", []string{"images", "-o", "custom-columns=REF:.ref,TIER:.tier"}, []string{"REF", "TIER", redisRef, "untrusted", apiRef, "trusted"}, nil},
		{"custom-columns without headers", []string{"images", "-o", "custom-columns=REF:.ref", "--no-headers"}, []string{redisRef}, []string{"REF"}},
		{"a table without headers", []string{"images", "--no-headers"}, []string{"docker.io/bitnami/redis"}, []string{"IMAGE", "TIER"}},
		{"go-template", []string{"decisions", "-n", "other", "-o", "go-template={{range .items}}{{.pod}} {{end}}"}, []string{"p1 p3 p5"}, nil},
		{"name of images", []string{"images", "-o", "name"}, []string{"image/" + redisRef + "\nimage/" + apiRef + "\n"}, nil},
		{"name of decisions", []string{"decisions", "-n", "other", "-o", "name"}, []string{"decision/other/p1\n"}, nil},
		{"name of one image", []string{"image", apiRef, "-o", "name"}, []string{"image/" + apiRef + "\n"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := run(t, append([]string{"--store", file}, tt.args...)...)
			if err != nil {
				t.Fatalf("reputectl %v: %v (%s)", tt.args, err, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
	if _, _, err := run(t, "--store", file, "images", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "custom-columns=") {
		t.Errorf("-o xml: %v, want an error listing the formats", err)
	}
}

// Flag values and arguments complete: tiers, namespaces (offline, from the store's decisions)
// and images.
func TestCompletion(t *testing.T) {
	file := storeFile(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"images", "--tier", "un"}, "unknown\nuntrusted\n:4\n"},
		{[]string{"decisions", "--tier", ""}, "trusted\nunknown\nuntrusted\n:4\n"},
		{[]string{"decisions", "-n", "o"}, "other\n:4\n"},
		{[]string{"image", "registry.internal/"}, apiRef + "\n:4\n"},
		{[]string{"history", "docker.io/"}, redisRef + "\n:4\n"},
	}
	for _, tt := range tests {
		out, _, err := run(t, append([]string{"__complete", "--store", file}, tt.args...)...)
		if err != nil || out != tt.want {
			t.Errorf("completing %q: %q, %v; want %q", tt.args, out, err, tt.want)
		}
	}
}
