package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/repute-dev/repute/reputation"
)

// BenchmarkAppendDecisions: sustained, acknowledged (durable) decision records per second
// through the batched writer, from 8 concurrent writers as placements arrive in a busy cluster.
func BenchmarkAppendDecisions(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + 7) / 8
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i += 10 {
				batch := make([]Decision, 10)
				for j := range batch {
					batch[j] = Decision{Namespace: "team", Pod: fmt.Sprintf("api-%d-%d-%d", g, i, j), UID: "8d0a3c1e-6f6e-4d84-9a53-3b1e1c7b9f21",
						Owner: "ReplicaSet/api-7d9f", Node: "trusted-1", Pool: "trusted", Tier: reputation.TierTrusted, Score: 90, PolicyVersion: "5c1b9e0d",
						Reason: "registry.internal/team/api@sha256:…: score 90 ≥ trusted threshold 70 [origin +10, signature verified +30]"}
				}
				if err := s.AppendDecisions(ctx, batch...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*8)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkHistoryOfOneDigest: one digest's history (100 entries) out of 1,000,000 history
// records over 10,000 digests.
func BenchmarkHistoryOfOneDigest(b *testing.B) {
	s, _ := openTemp(b, Options{})
	const digests, perDigest = 10000, 100
	image := func(i int) string { return fmt.Sprintf("registry.internal/team/app-%05d@sha256:%064x", i, i) }
	// Filled directly, in large transactions: the writer's path is measured above.
	for start := 0; start < digests; start += 500 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < start+500; i++ {
				for j := range perDigest {
					v := verdictAt(image(i), reputation.TierTrusted, j, t0.Add(time.Duration(j)*time.Minute))
					if err := putJSON(tx.Bucket(bucketHistory), historyKey(image(i), s.timeKey(v.EvaluatedAt)), v); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, _, err := s.History(image(i*7919%digests), Page{})
		if err != nil || len(h) != perDigest {
			b.Fatalf("history of %s: %d entries, %v", image(i), len(h), err)
		}
	}
}
