package reputectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
)

// maxPolicyFileBytes bounds a policy file read from disk or stdin.
const maxPolicyFileBytes = audit.MaxSimulationBodyBytes

// readPolicyFile reads a ReputationPolicy from YAML or JSON ("-" is stdin), strictly: a
// misspelled field is an error that names it.
func readPolicyFile(path string, stdin io.Reader) (*v1alpha1.ReputationPolicy, error) {
	if path == "" {
		return nil, fmt.Errorf("-f FILE is required (a ReputationPolicy as YAML or JSON; - reads stdin)")
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPolicyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPolicyFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPolicyFileBytes)
	}
	// Through an unstructured object, as the apiserver decodes it, so that an unknown field is
	// named by its path (spec.origin.rules[0].tiers).
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(asJSON, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var rp v1alpha1.ReputationPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, &rp, true); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rp.Kind != v1alpha1.Kind || rp.APIVersion != v1alpha1.Group+"/"+v1alpha1.Version {
		return nil, fmt.Errorf("%s: a %s %s, want apiVersion %s/%s kind %s", path, rp.APIVersion, rp.Kind, v1alpha1.Group, v1alpha1.Version, v1alpha1.Kind)
	}
	return &rp, nil
}

// compileFile reads and checks a policy file exactly as the scheduler would.
func compileFile(path string, stdin io.Reader) (*v1alpha1.ReputationPolicy, *rpolicy.Compiled, error) {
	rp, err := readPolicyFile(path, stdin)
	if err != nil {
		return nil, nil, err
	}
	c, errs := rpolicy.Compile(&rp.Spec)
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("%s: %v", path, errs.ToAggregate())
	}
	return rp, c, nil
}

func newPolicyValidateCommand(o *options) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a ReputationPolicy file with the scheduler's own checks (offline)",
		Long: `Check a ReputationPolicy file with the scheduler's own checks, keys included, without
contacting anything. The apiserver also applies the CRD's schema and CEL rules; for those, run
kubectl apply --dry-run=server -f FILE.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, c, err := compileFile(file, o.in)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.out, "%s: valid; policy version %s\n", file, c.Policy.Version())
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the ReputationPolicy (YAML or JSON; - for stdin)")
	return cmd
}

// ErrDiffers is what policy diff returns when the policies differ: the command exits 1, as
// kubectl diff does, having printed the difference; any failure exits 2 (see ExitCode).
var ErrDiffers = errors.New("the policies differ")

// ExitCode is the status reputectl exits with after err: 0 without one, 1 when policy diff found
// a difference or any other command failed, 2 when policy diff itself failed.
func ExitCode(err error) int {
	var failed diffFailed
	switch {
	case err == nil:
		return 0
	case errors.As(err, &failed):
		return 2
	}
	return 1
}

// diffFailed marks an error of policy diff, which exits 2 so that 1 means "differs".
type diffFailed struct{ error }

func (e diffFailed) Unwrap() error { return e.error }

func newPolicyDiffCommand(o *options) *cobra.Command {
	var file string
	diff := o.run(func(ctx context.Context, c auditReader, _ []string) error {
		_, proposed, err := compileFile(file, o.in)
		if err != nil {
			return err
		}
		inForce, _, err := policyInForce(ctx, c)
		if err != nil {
			return err
		}
		current, err := yaml.JSONToYAML(inForce.Policy)
		if err != nil {
			return err
		}
		next, err := specYAML(proposed)
		if err != nil {
			return err
		}
		diff, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(current)), B: difflib.SplitLines(string(next)),
			FromFile: "in force " + inForce.Version, ToFile: file + " " + proposed.Policy.Version(), Context: 3,
		})
		if err != nil {
			return err
		}
		if diff == "" {
			fmt.Fprintf(o.out, "no difference: %s is the policy in force (%s)\n", file, inForce.Version)
			return nil
		}
		if _, err := io.WriteString(o.out, diff); err != nil {
			return err
		}
		return ErrDiffers
	})
	cmd := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show how a ReputationPolicy file differs from the policy in force, defaults filled in",
		Long: `Show how a ReputationPolicy file differs from the policy in force, defaults filled in.
Exits 0 when they are the same, 1 when they differ, 2 when the diff could not be made, as
kubectl diff does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := diff(cmd, args); err != nil && !errors.Is(err, ErrDiffers) {
				return diffFailed{err}
			} else {
				return err
			}
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the ReputationPolicy (YAML or JSON)")
	return cmd
}

// specYAML is a compiled policy as the store records it: a ReputationPolicy spec, defaulted.
func specYAML(c *rpolicy.Compiled) ([]byte, error) {
	b, err := json.Marshal(c.Versioned())
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(b)
}

func newPolicySimulateCommand(o *options) *cobra.Command {
	var file string
	var showUnchanged, allNamespaces bool
	cmd := &cobra.Command{
		Use:   "simulate -f FILE",
		Short: "What would this policy change? Images and running and pending pods whose tier would change; nothing is applied",
		Long: `Weigh every image the scheduler knows under a proposed ReputationPolicy, from the evidence it
holds (signatures, reports, runtime behaviour), and list the images whose tier or score would
change and the running and pending pods whose tier would change, with before and after. Nothing
is applied and no registry is contacted. Images are cluster-wide; pods are listed for the
namespace as kubectl picks it (-n, else the kubeconfig context's), or every namespace with -A,
and the count of those left out is given. Needs the create permission on
simulations.audit.repute.dev (the repute-policy-simulator ClusterRole).`,
		Example: `  reputectl policy simulate -f proposed.yaml -A
  kubectl get reputationpolicy default -o yaml | sed 's/weight: 30/weight: 10/' | reputectl policy simulate -f -`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, c auditReader, _ []string) error {
			rp, _, err := compileFile(file, o.in)
			if err != nil {
				return err
			}
			sim, err := c.Simulate(ctx, rp)
			if err != nil {
				return err
			}
			namespace := o.namespaceOf(allNamespaces)
			elsewhere := 0
			if namespace != "" {
				in := sim.Pods[:0:0]
				for _, p := range sim.Pods {
					if p.Namespace == namespace {
						in = append(in, p)
					}
				}
				elsewhere, sim.Pods = len(sim.Pods)-len(in), in
			}
			return o.print(sim, func(w io.Writer) { o.describeSimulation(w, sim, showUnchanged, namespace, elsewhere) })
		}),
	}
	addAllNamespacesFlag(cmd, &allNamespaces)
	cmd.Flags().StringVarP(&file, "file", "f", "", "the proposed ReputationPolicy (YAML or JSON; - for stdin)")
	cmd.Flags().BoolVar(&showUnchanged, "show-unchanged", false, "also say how many images would not change (always in -o json)")
	return cmd
}

// describeSimulation prints a simulation whose pods are namespace's (every namespace's if ""),
// elsewhere being how many pods of other namespaces were left out.
func (o *options) describeSimulation(w io.Writer, sim *audit.Simulation, showUnchanged bool, namespace string, elsewhere int) {
	row(w, "Policy in force:", sim.CurrentVersion)
	row(w, "Proposed:", sim.ProposedVersion)
	if len(sim.Images) == 0 {
		row(w, "Images:", "no tier or score would change")
	} else {
		row(w, "Images whose tier or score would change:")
		row(w, "  IMAGE", "TIER", "SCORE", "DECIDED BY (PROPOSED)")
		for _, c := range sim.Images {
			tier := string(c.Before.Tier)
			if c.After.Tier != c.Before.Tier {
				tier += " → " + string(c.After.Tier)
			}
			row(w, "  "+o.ref(c.Ref), tier, fmt.Sprintf("%d → %d", c.Before.Score, c.After.Score), o.clip(c.After.DecidedBy, 32))
		}
	}
	if showUnchanged {
		row(w, "Unchanged images:", sim.Unchanged)
	}
	scope := ""
	if namespace != "" {
		scope = " in namespace " + namespace
	}
	if len(sim.Pods) == 0 {
		row(w, "Pods:", "no bound or pending pod"+scope+" would change tier")
	} else {
		row(w, "Pods"+scope+" whose tier would change:")
		row(w, "  NAMESPACE", "POD", "PHASE", "NODE", "TIER", "BECAUSE OF")
		for _, p := range sim.Pods {
			node := p.Node
			if node == "" {
				node = "-"
			}
			row(w, "  "+p.Namespace, p.Name, p.Phase, node, string(p.Before)+" → "+string(p.After), o.ref(p.Image))
		}
	}
	if elsewhere > 0 {
		pods := "pods would"
		if elsewhere == 1 {
			pods = "pod would"
		}
		row(w, "Other namespaces:", fmt.Sprintf("%d more %s change tier (-A lists them)", elsewhere, pods))
	}
	if len(sim.NotSimulated) > 0 {
		row(w, "Not simulated:", strings.Join(sim.NotSimulated, ", "))
	}
	for _, warning := range sim.Warnings {
		row(w, "Warning:", warning)
	}
}
