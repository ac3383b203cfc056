// Package shrink gives back the space Go maps keep after deletes: a map that once held a flood
// of one-off keys keeps its buckets after they are deleted, so long-lived indexes keyed by what
// pods bring are rebuilt once they hold a fraction of their peak.
package shrink

// MinPeak is the smallest peak worth rebuilding for.
const MinPeak = 1024

// Due says whether maps that held peak entries, and hold n now, are worth rebuilding: once a
// quarter or less remains of a peak of at least MinPeak. Amortized, rebuilding then costs O(1)
// per deleted entry.
func Due(n, peak int) bool { return peak >= MinPeak && n <= peak/4 }

// Map copies m into a map sized for what it holds now. maps.Clone would not do: it copies the
// source's capacity too (a heap profile showed the clones keeping a flood's size).
func Map[M ~map[K]V, K comparable, V any](m M) M {
	out := make(M, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
