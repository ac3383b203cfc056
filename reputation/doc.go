// Package reputation is Repute's domain: image references, evidence, the policy that weighs
// evidence into a score and a tier, the explained verdict, the engine that evaluates images in
// the background and the in-memory verdict cache the scheduler plugin reads.
//
// It imports neither the scheduler nor client-go, so that the rules that decide trust can be
// read, tested and reused (by reputectl's what-if, by the store) without a cluster.
//
// Data flows one way: evidence → engine → verdict cache → plugin.
package reputation
