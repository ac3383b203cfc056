package shrink

import "testing"

func TestDue(t *testing.T) {
	for _, tc := range []struct {
		n, peak int
		want    bool
	}{
		{0, 100, false},    // too small to matter
		{256, 1024, true},  // a quarter left
		{257, 1024, false}, // more than a quarter
		{0, 100_000, true}, // a flood, all gone
		{30_000, 100_000, false},
	} {
		if got := Due(tc.n, tc.peak); got != tc.want {
			t.Errorf("Due(%d, %d) = %v, want %v", tc.n, tc.peak, got, tc.want)
		}
	}
}

func TestMapKeepsEveryEntry(t *testing.T) {
	m := map[string]int{}
	for i := range 5000 {
		m[string(rune('a'+i%26))+string(rune(i))] = i
	}
	for k := range m {
		if m[k]%2 == 0 {
			delete(m, k)
		}
	}
	got := Map(m)
	if len(got) != len(m) {
		t.Fatalf("%d entries, want %d", len(got), len(m))
	}
	for k, v := range m {
		if got[k] != v {
			t.Fatalf("%q = %d, want %d", k, got[k], v)
		}
	}
}
