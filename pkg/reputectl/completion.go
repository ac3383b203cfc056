package reputectl

import (
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// Shell completion of flag values and arguments, as kubectl completes them: tiers from the
// domain, images from the audit API (or the store), namespaces from the apiserver (or, offline,
// from the store's decisions). A completion that cannot reach its source offers nothing.

// completeTiers completes --tier.
func completeTiers(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, t := range []reputation.Tier{reputation.TierTrusted, reputation.TierUnknown, reputation.TierUntrusted} {
		if strings.HasPrefix(string(t), prefix) {
			out = append(out, string(t))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeImages completes an image argument with the images that have verdicts.
func (o *options) completeImages(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := o.client(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	items, _, err := collect(url.Values{}, 5000, pagesOf[audit.Image](cmd.Context(), c.Images))
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, img := range items {
		if strings.HasPrefix(img.Ref, prefix) {
			out = append(out, img.Ref)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNamespaces completes -n: the cluster's namespaces, or offline the store's.
func (o *options) completeNamespaces(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	var names []string
	if o.storeFile != "" {
		c, err := o.client(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		items, _, err := collect(url.Values{}, 5000, pagesOf[store.Decision](cmd.Context(), c.Decisions))
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		for _, d := range items {
			names = append(names, d.Namespace)
		}
	} else {
		cfg, err := o.kube.ToRESTConfig()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		list, err := client.CoreV1().Namespaces().List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		for _, ns := range list.Items {
			names = append(names, ns.Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	return slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, prefix) }), cobra.ShellCompDirectiveNoFileComp
}
