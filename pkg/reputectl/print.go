package reputectl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/cmd/get"
	"sigs.k8s.io/yaml"
)

// pageSize is how many records each request asks for while collecting a list.
const pageSize = 500

// collect reads pages until limit items (0: all) or the end, and says whether more remain.
func collect[T any](query url.Values, limit int, page func(url.Values) ([]T, string, error)) ([]T, bool, error) {
	all := []T{} // an empty list is [] in JSON, as kubectl prints it, not null
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	for {
		size := pageSize
		if limit > 0 {
			size = min(size, limit-len(all))
		}
		q.Set("limit", fmt.Sprint(size))
		items, next, err := page(q)
		if err != nil {
			return nil, false, err
		}
		all = append(all, items...)
		if next == "" {
			return all, false, nil
		}
		if limit > 0 && len(all) >= limit {
			return all, true, nil
		}
		q.Set("continue", next)
	}
}

// pagesOf adapts a client's list call (c.Images, c.Decisions, …) to collect.
func pagesOf[T any, L interface{ Page() ([]T, string) }](ctx context.Context, list func(context.Context, url.Values) (L, error)) func(url.Values) ([]T, string, error) {
	return func(q url.Values) ([]T, string, error) {
		l, err := list(ctx, q)
		if err != nil {
			return nil, "", err
		}
		items, next := l.Page()
		return items, next, nil
	}
}

// print writes obj as JSON or YAML, or through one of kubectl's printers (name, jsonpath,
// custom-columns, go-template), or calls table for the table formats (table, wide).
func (o *options) print(obj any, table func(w io.Writer)) error {
	if o.output == "name" {
		return o.printNames(obj)
	}
	if printer, ok, err := kubectlPrinter(o.output, o.noHeaders); ok {
		if err != nil {
			return err
		}
		u, err := toUnstructured(obj)
		if err != nil {
			return err
		}
		return printer.PrintObj(u, o.out)
	}
	switch o.output {
	case "json":
		enc := json.NewEncoder(o.out)
		enc.SetIndent("", "  ")
		return enc.Encode(obj)
	case "yaml":
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		_, err = o.out.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(o.out, 0, 8, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// printList is print for a list: an empty one says so, on stderr, as kubectl does, and
// --no-headers leaves out a table's first line.
func (o *options) printList(obj any, empty bool, table func(w io.Writer)) error {
	if empty && (o.output == "table" || o.output == "wide") {
		fmt.Fprintln(o.errOut, "No resources found.")
		return nil
	}
	if o.noHeaders {
		return o.print(obj, func(w io.Writer) { table(&skipFirstLine{w: w}) })
	}
	return o.print(obj, table)
}

// skipFirstLine drops everything up to and including the first newline written to it.
type skipFirstLine struct {
	w       io.Writer
	skipped bool
}

func (s *skipFirstLine) Write(p []byte) (int, error) {
	n := len(p)
	if !s.skipped {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return n, nil
		}
		s.skipped, p = true, p[i+1:]
	}
	_, err := s.w.Write(p)
	return n, err
}

// kubectlPrinter is kubectl's printer for an output format it prints (jsonpath, go-template,
// custom-columns and their -file forms); ok is false for the formats reputectl prints itself.
func kubectlPrinter(output string, noHeaders bool) (_ printers.ResourcePrinter, ok bool, _ error) {
	templates := genericclioptions.NewKubeTemplatePrintFlags()
	if p, err := templates.ToPrinter(output); !genericclioptions.IsNoCompatiblePrinterError(err) {
		return p, true, err
	}
	columns := &get.CustomColumnsPrintFlags{NoHeaders: noHeaders}
	if p, err := columns.ToPrinter(output); !genericclioptions.IsNoCompatiblePrinterError(err) {
		return p, true, err
	}
	return nil, false, nil
}

// toUnstructured is obj as kubectl's printers take it: its JSON, as an object or a list.
func toUnstructured(obj any) (runtime.Object, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err == nil && u.IsList() {
		return u.ToList()
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// printNames is -o name: kind/name per object, as kubectl prints it. An image is named by its
// reference, a decision by namespace/pod, a policy by its version.
func (o *options) printNames(obj any) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var doc struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	items := doc.Items
	if items == nil {
		var one map[string]any
		if err := json.Unmarshal(raw, &one); err != nil {
			return err
		}
		items = []map[string]any{one}
	}
	for _, it := range items {
		kind, name := "image", fmt.Sprint(it["ref"])
		switch {
		case it["pod"] != nil:
			kind, name = "decision", fmt.Sprintf("%v/%v", it["namespace"], it["pod"])
		case it["ref"] == nil && it["version"] != nil:
			kind, name = "policy", fmt.Sprint(it["version"])
		}
		fmt.Fprintf(o.out, "%s/%s\n", kind, name)
	}
	return nil
}

// wide says whether tables show every column at full length (-o wide).
func (o *options) wide() bool { return o.output == "wide" }

// ref is an image reference as a table shows it: its digest cut to 12 hex digits, unless -o
// wide, so that a table fits a terminal.
func (o *options) ref(ref string) string {
	if o.wide() {
		return ref
	}
	const digest = "@sha256:"
	if at := strings.Index(ref, digest); at >= 0 && len(ref) > at+len(digest)+12 {
		return ref[:at+len(digest)+12] + "…"
	}
	return ref
}

// clip cuts free text a table shows to max runes, unless -o wide.
func (o *options) clip(text string, max int) string {
	if o.wide() {
		return text
	}
	if r := []rune(text); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return text
}

// truncated tells the user on stderr that a list stopped at --limit.
func (o *options) truncated(more bool, limit int) {
	if more {
		fmt.Fprintf(o.errOut, "showing the first %d; more match (--limit 0 shows all)\n", limit)
	}
}

func row(w io.Writer, cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}

// age is how kubectl shows a time in a table: "5m", "3d".
func age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t))
}

// timeFlag parses a --from or --to value: RFC 3339, or a duration back from now ("2h").
func timeFlag(name, value string) (string, error) {
	if value == "" {
		return "", nil
	}
	if d, err := time.ParseDuration(value); err == nil {
		return time.Now().Add(-d).UTC().Format(time.RFC3339), nil
	}
	if _, err := time.Parse(time.RFC3339, value); err != nil {
		return "", fmt.Errorf("--%s %q: want an RFC 3339 time (2026-11-22T10:00:00Z) or a duration back from now (2h)", name, value)
	}
	return value, nil
}
