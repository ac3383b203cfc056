package recent

import (
	"slices"
	"testing"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name      string
		list      []string
		v         string
		want      []string
		wantAdded bool
	}{
		{"new", []string{"a"}, "b", []string{"a", "b"}, true},
		{"repeat", []string{"a", "b"}, "a", []string{"a", "b"}, false},
		{"full: the oldest goes", []string{"a", "b", "c"}, "d", []string{"b", "c", "d"}, true},
		{"empty", nil, "a", []string{"a"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, added := Append(tt.list, tt.v, 3)
			if !slices.Equal(got, tt.want) || added != tt.wantAdded {
				t.Errorf("Append(%v, %q, 3) = %v, %v; want %v, %v", tt.list, tt.v, got, added, tt.want, tt.wantAdded)
			}
		})
	}
}
