package reputation

import "fmt"

// Tier is the isolation class an image, and so a pod, is placed in.
type Tier string

const (
	// TierTrusted images share the trusted pool.
	TierTrusted Tier = "trusted"
	// TierUnknown images have not been assessed (or could not be); they wait in a restricted pool.
	TierUnknown Tier = "unknown"
	// TierUntrusted images are held apart, with less access and fewer resources.
	TierUntrusted Tier = "untrusted"
)

// Tiers lists every tier, from most to least trusted.
var Tiers = []Tier{TierTrusted, TierUnknown, TierUntrusted}

// rank orders tiers so that the least trusted compares lowest.
func (t Tier) rank() int {
	switch t {
	case TierTrusted:
		return 2
	case TierUnknown:
		return 1
	default:
		// Anything unrecognised is treated as the worst tier: nothing unverified may raise trust.
		return 0
	}
}

// Worse returns the less trusted of two tiers. A pod is as trusted as its least trusted image.
func Worse(a, b Tier) Tier {
	if b.rank() < a.rank() {
		return b
	}
	return a
}

// LessTrusted reports whether a is strictly less trusted than b.
func LessTrusted(a, b Tier) bool { return a.rank() < b.rank() }

// ParseTier accepts the tier names operators write in configuration.
func ParseTier(s string) (Tier, error) {
	switch t := Tier(s); t {
	case TierTrusted, TierUnknown, TierUntrusted:
		return t, nil
	}
	return "", fmt.Errorf("unknown tier %q: want one of trusted, unknown, untrusted", s)
}
