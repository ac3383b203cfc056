package reputectl

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation/store"
)

// Query parameters are checked by the server, which names the bad one in a 400; the flags pass
// them through unchanged so the CLI and the API agree on what is valid.

func newImagesCommand(o *options) *cobra.Command {
	var tier, registry, minScore, maxScore string
	limit := pageSize
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List images and their current tiers",
		Example: `  reputectl images --tier untrusted
  reputectl images --registry docker.io --max-score 40 -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c auditReader, _ []string) error {
			q := url.Values{}
			setIf(q, "tier", tier)
			setIf(q, "registry", registry)
			setIf(q, "minScore", minScore)
			setIf(q, "maxScore", maxScore)
			items, more, err := collect(q, limit, pagesOf[audit.Image](ctx, c.Images))
			if err != nil {
				return err
			}
			defer o.truncated(more, limit)
			list := audit.ImageList{TypeMeta: audit.TypeMeta("ImageList"), Items: items}
			return o.printList(list, len(items) == 0, func(w io.Writer) {
				row(w, "IMAGE", "TIER", "SCORE", "DECIDED BY", "AGE")
				for _, img := range items {
					row(w, o.ref(img.Ref), img.Tier, img.Score, o.clip(img.DecidedBy, 40), age(img.EvaluatedAt))
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&tier, "tier", "", "only this tier: trusted, unknown or untrusted")
	_ = cmd.RegisterFlagCompletionFunc("tier", completeTiers)
	f.StringVar(&registry, "registry", "", `only images from this registry, e.g. "docker.io"`)
	f.StringVar(&minScore, "min-score", "", "only scores at or above this (0-100)")
	f.StringVar(&maxScore, "max-score", "", "only scores at or below this (0-100)")
	f.IntVar(&limit, "limit", limit, "show at most this many (0: all)")
	return cmd
}

func newImageCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "image REF|DIGEST",
		Short: "Explain one image's verdict: every piece of evidence and what it weighed",
		Example: `  reputectl image registry.internal/team/api:v1
  reputectl image sha256:9b2a28eb47540823042a2ba401386845089bb7b62a9637d55816132c4c3c36eb`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeImages,
		RunE: o.run(func(ctx context.Context, c auditReader, args []string) error {
			img, err := c.Image(ctx, args[0])
			if err != nil {
				return err
			}
			return o.print(img, func(w io.Writer) { o.describeImage(w, img) })
		}),
	}
}

// describeImage is the person-readable explanation, laid out like kubectl describe.
func (o *options) describeImage(w io.Writer, img *audit.Image) {
	row(w, "Image:", img.Ref)
	switch {
	case img.Key == img.Ref:
	case strings.Contains(img.Key, "@sha256:"):
		row(w, "Digest:", img.Key)
	default: // a tag whose digest is not known: its canonical name, never called a digest
		row(w, "Canonical name:", img.Key)
	}
	row(w, "Tier:", img.Tier)
	row(w, "Score:", img.Score)
	row(w, "Decided by:", img.DecidedBy)
	row(w, "Policy version:", img.PolicyVersion)
	row(w, "Evaluated:", fmt.Sprintf("%s (%s ago)", img.EvaluatedAt.UTC().Format(time.RFC3339), age(img.EvaluatedAt)))
	if len(img.Contributions) == 0 {
		row(w, "Evidence:", "none recorded")
		return
	}
	row(w, "Evidence:")
	row(w, "  SIGNAL", "POINTS", "TIER", "OBSERVED", "RULE")
	for _, c := range img.Contributions {
		tier := "-"
		if c.Tier != "" {
			tier = string(c.Tier)
		}
		rule := c.Rule
		if rule == "" {
			rule = "-"
		}
		row(w, "  "+string(c.Signal), fmt.Sprintf("%+d", c.Points), tier, o.clip(c.Observed, 48), o.clip(rule, 36))
	}
}

func newHistoryCommand(o *options) *cobra.Command {
	var from, to string
	limit := pageSize
	cmd := &cobra.Command{
		Use:   "history REF|DIGEST",
		Short: "Show every verdict an image had, oldest first",
		Example: `  reputectl history registry.internal/team/api:v1 --from 24h
  reputectl history sha256:9b2a… --from 2026-11-01T00:00:00Z --to 2026-11-08T00:00:00Z`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeImages,
		RunE: o.run(func(ctx context.Context, c auditReader, args []string) error {
			q, err := timeRange(from, to)
			if err != nil {
				return err
			}
			q.Set("image", args[0])
			ref := args[0]
			items, more, err := collect(q, limit, func(q url.Values) ([]store.HistoryEntry, string, error) {
				h, err := c.History(ctx, q)
				if err != nil {
					return nil, "", err
				}
				ref = h.Ref
				return h.Items, h.Continue, nil
			})
			if err != nil {
				return err
			}
			defer o.truncated(more, limit)
			h := audit.History{TypeMeta: audit.TypeMeta("History"), Ref: ref, Items: items}
			return o.print(h, func(w io.Writer) {
				row(w, "TIME", "TIER", "SCORE", "POLICY", "REASON")
				for _, e := range items {
					row(w, e.Time.UTC().Format(time.RFC3339), e.Verdict.Tier, e.Verdict.Score, e.Verdict.PolicyVersion, o.clip(e.Verdict.Reason(), 64))
				}
			})
		}),
	}
	addTimeFlags(cmd, &from, &to)
	cmd.Flags().IntVar(&limit, "limit", limit, "show at most this many (0: all)")
	return cmd
}

// namespaceOf is the namespace a command is about, as kubectl picks it: -n, else the kubeconfig
// context's (offline, every namespace); "" with -A, every namespace.
func (o *options) namespaceOf(allNamespaces bool) string {
	switch {
	case allNamespaces:
		return ""
	case *o.kube.Namespace != "":
		return *o.kube.Namespace
	default:
		return o.namespace
	}
}

func addAllNamespacesFlag(cmd *cobra.Command, all *bool) {
	cmd.Flags().BoolVarP(all, "all-namespaces", "A", false, "every namespace")
}

func newDecisionsCommand(o *options) *cobra.Command {
	var pod, uid, node, tier, from, to string
	var allNamespaces bool
	limit := pageSize
	cmd := &cobra.Command{
		Use:   "decisions",
		Short: "Show placement decisions: which pod went to which pool, and why",
		Long: `Show placement decisions, oldest first. Like kubectl, the kubeconfig context's namespace is
the default; -A shows every namespace. With --store, every namespace is the default.`,
		Example: `  reputectl decisions -n team --from 1h
  reputectl decisions -A --tier untrusted -o yaml`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c auditReader, _ []string) error {
			q, err := timeRange(from, to)
			if err != nil {
				return err
			}
			setIf(q, "namespace", o.namespaceOf(allNamespaces))
			setIf(q, "pod", pod)
			setIf(q, "uid", uid)
			setIf(q, "node", node)
			setIf(q, "tier", tier)
			items, more, err := collect(q, limit, pagesOf[store.Decision](ctx, c.Decisions))
			if err != nil {
				return err
			}
			defer o.truncated(more, limit)
			list := audit.DecisionList{TypeMeta: audit.TypeMeta("DecisionList"), Items: items}
			return o.printList(list, len(items) == 0, func(w io.Writer) {
				header := []any{"TIME", "NAMESPACE", "POD", "ACTION", "NODE", "POOL", "TIER", "SCORE"}
				if o.wide() { // the reason runs long: -o wide adds it, as kubectl adds columns
					header = append(header, "REASON")
				}
				row(w, header...)
				for _, d := range items {
					action := d.Action
					if action == "" {
						action = "placed"
					}
					cells := []any{d.Time.UTC().Format(time.RFC3339), d.Namespace, d.Pod, action, d.Node, d.Pool, d.Tier, d.Score}
					if o.wide() {
						cells = append(cells, d.Reason)
					}
					row(w, cells...)
				}
			})
		}),
	}
	f := cmd.Flags()
	addAllNamespacesFlag(cmd, &allNamespaces)
	f.StringVar(&pod, "pod", "", "only this pod name")
	f.StringVar(&uid, "uid", "", "only this pod UID")
	f.StringVar(&node, "node", "", "only this node")
	f.StringVar(&tier, "tier", "", "only this tier")
	_ = cmd.RegisterFlagCompletionFunc("tier", completeTiers)
	addTimeFlags(cmd, &from, &to)
	f.IntVar(&limit, "limit", limit, "show at most this many (0: all)")
	return cmd
}

func newPolicyCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "The trust policy: what is in force, what was, and what a change would do",
	}
	cmd.AddCommand(newPolicyValidateCommand(o), newPolicyDiffCommand(o), newPolicySimulateCommand(o))
	cmd.AddCommand(&cobra.Command{
		Use:   "show [VERSION]",
		Short: "Show the policy in force (or an earlier version) and when it came into force",
		Args:  cobra.MaximumNArgs(1),
		RunE: o.run(func(ctx context.Context, c auditReader, args []string) error {
			p, all, err := policyInForce(ctx, c)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				found := false
				for _, r := range all {
					if r.Version == args[0] {
						p, found = r, true
					}
				}
				if !found {
					return fmt.Errorf("policy version %q was never in force; `reputectl policy versions` lists them", args[0])
				}
			}
			return o.print(p, func(w io.Writer) {
				row(w, "Version:", p.Version)
				row(w, "In force since:", p.Time.UTC().Format(time.RFC3339))
				row(w, "Source:", p.Source)
				body, err := yaml.JSONToYAML(p.Policy)
				if err != nil {
					body = p.Policy
				}
				fmt.Fprintf(w, "Policy:\n%s", indent(string(body), "  "))
			})
		}),
	}, &cobra.Command{
		Use:   "versions",
		Short: "List every policy version that was in force, oldest first",
		Args:  cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c auditReader, _ []string) error {
			all, err := policyVersions(ctx, c)
			if err != nil {
				return err
			}
			list := audit.PolicyList{TypeMeta: audit.TypeMeta("PolicyList"), Items: all}
			return o.print(list, func(w io.Writer) {
				row(w, "VERSION", "IN FORCE SINCE", "SOURCE")
				for _, p := range all {
					row(w, p.Version, p.Time.UTC().Format(time.RFC3339), p.Source)
				}
			})
		}),
	})
	return cmd
}

func newBackupCommand(o *options) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "backup -f FILE",
		Short: "Save a consistent copy of the whole store (needs the repute-audit-backup role)",
		Long: `Save a consistent copy of the whole store, taken online while the scheduler runs. The copy
opens with --store for offline forensics, and restores as the scheduler's store.path.`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c auditReader, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			// Written beside the target and renamed, so a failed backup never leaves a torn file.
			tmp, err := os.CreateTemp(filepath.Dir(file), ".repute-backup-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := c.Backup(ctx, tmp)
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			// The copy must open as a store: a truncated stream fails here, not at restore time.
			check, err := store.Open(tmp.Name(), store.Options{ReadOnly: true})
			if err != nil {
				return fmt.Errorf("backup of %d bytes does not open as a store: %w", n, err)
			}
			check.Close()
			if err := os.Rename(tmp.Name(), file); err != nil {
				return err
			}
			fmt.Fprintf(o.errOut, "wrote %s (%d bytes)\n", file, n)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "where to write the copy")
	return cmd
}

// policyVersions reads every policy version; there are few.
func policyVersions(ctx context.Context, c auditReader) ([]store.PolicyRecord, error) {
	all, _, err := collect(url.Values{}, 0, pagesOf[store.PolicyRecord](ctx, c.Policies))
	return all, err
}

// policyInForce is the newest recorded policy, and every recorded one.
func policyInForce(ctx context.Context, c auditReader) (store.PolicyRecord, []store.PolicyRecord, error) {
	all, err := policyVersions(ctx, c)
	if err != nil {
		return store.PolicyRecord{}, nil, err
	}
	if len(all) == 0 {
		return store.PolicyRecord{}, nil, fmt.Errorf("no policy has been recorded")
	}
	return all[len(all)-1], all, nil
}

func setIf(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}

func addTimeFlags(cmd *cobra.Command, from, to *string) {
	cmd.Flags().StringVar(from, "from", "", "from this time: RFC 3339, or a duration back from now (24h)")
	cmd.Flags().StringVar(to, "to", "", "up to this time: RFC 3339, or a duration back from now")
}

func timeRange(from, to string) (url.Values, error) {
	q := url.Values{}
	for _, f := range []struct{ name, value string }{{"from", from}, {"to", to}} {
		v, err := timeFlag(f.name, f.value)
		if err != nil {
			return nil, err
		}
		setIf(q, f.name, v)
	}
	return q, nil
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}
