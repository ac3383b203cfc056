// Package recent keeps bounded lists of the most recently seen values, for state whose keys
// come from what users create (images, workloads, namespaces), so a flood cannot grow a list.
package recent

import "slices"

// Append adds v to the newest end of list unless it is there already, dropping the oldest
// beyond limit; added says whether v was new.
func Append[T comparable](list []T, v T, limit int) (_ []T, added bool) {
	if slices.Contains(list, v) {
		return list, false
	}
	if len(list) >= limit {
		list = list[1:]
	}
	return append(list, v), true
}
