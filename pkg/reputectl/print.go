package reputectl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
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

// print writes obj as JSON or YAML, or calls table for the table formats (table, wide).
func (o *options) print(obj any, table func(w io.Writer)) error {
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

// printList is print for a list: an empty one says so, on stderr, as kubectl does.
func (o *options) printList(obj any, empty bool, table func(w io.Writer)) error {
	if empty && (o.output == "table" || o.output == "wide") {
		fmt.Fprintln(o.errOut, "No resources found.")
		return nil
	}
	return o.print(obj, table)
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
