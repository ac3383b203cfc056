package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/repute-dev/repute/reputation"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func openTemp(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "repute.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func verdictAt(image string, tier reputation.Tier, score int, at time.Time) *reputation.Verdict {
	return &reputation.Verdict{Image: image, Key: image, Tier: tier, Score: score, DecidedBy: "test", PolicyVersion: "p1", EvaluatedAt: at}
}

func TestVerdictsAndHistory(t *testing.T) {
	s, path := openTemp(t, Options{})
	ctx := context.Background()
	const api = "registry.internal/team/api@sha256:aaaa"
	for i, tier := range []reputation.Tier{reputation.TierUnknown, reputation.TierTrusted, reputation.TierUntrusted} {
		if err := s.AppendVerdict(ctx, api, verdictAt(api, tier, 50+i, t0.Add(time.Duration(i)*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	// Another image whose name extends the first must not leak into its history.
	if err := s.AppendVerdict(ctx, api+"b", verdictAt(api+"b", reputation.TierTrusted, 90, t0)); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Verdict(api)
	if err != nil || cur == nil || cur.Tier != reputation.TierUntrusted {
		t.Fatalf("current verdict = %+v, %v; want the last one", cur, err)
	}
	tests := []struct {
		name     string
		from, to time.Time
		limit    int
		want     []reputation.Tier
	}{
		{"all", time.Time{}, time.Time{}, 0, []reputation.Tier{"unknown", "trusted", "untrusted"}},
		{"from the second", t0.Add(time.Hour), time.Time{}, 0, []reputation.Tier{"trusted", "untrusted"}},
		{"before the third", time.Time{}, t0.Add(2 * time.Hour), 0, []reputation.Tier{"unknown", "trusted"}},
		{"limited", time.Time{}, time.Time{}, 1, []reputation.Tier{"unknown"}},
		{"empty range", t0.Add(5 * time.Hour), time.Time{}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, err := s.History(api, Page{From: tt.from, To: tt.to, Limit: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			var got []reputation.Tier
			for _, e := range h {
				got = append(got, e.Verdict.Tier)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("history tiers = %v, want %v", got, tt.want)
			}
		})
	}
	// Paged one entry at a time, the history comes back whole and in order.
	var paged []reputation.Tier
	for cursor, pages := "", 0; ; pages++ {
		h, next, err := s.History(api, Page{Limit: 1, After: cursor})
		if err != nil || pages > 3 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, e := range h {
			paged = append(paged, e.Verdict.Tier)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(paged) != "[unknown trusted untrusted]" {
		t.Errorf("history paged one at a time = %v", paged)
	}
	// Reopened, the store has the same current verdicts: what the cache warms from.
	s.Close()
	s2, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	all, err := s2.Verdicts()
	if err != nil || len(all) != 2 || all[api].Tier != reputation.TierUntrusted {
		t.Errorf("verdicts after reopening = %v, %v", all, err)
	}
}

func TestDecisionsPaginateAndFilter(t *testing.T) {
	s, _ := openTemp(t, Options{})
	var ds []Decision
	for i := range 25 {
		ns := "team"
		if i%5 == 0 {
			ns = "other"
		}
		ds = append(ds, Decision{Time: t0.Add(time.Duration(i) * time.Minute), Namespace: ns, Pod: fmt.Sprintf("p%02d", i), Node: "n1", Tier: reputation.TierTrusted})
	}
	if err := s.AppendDecisions(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	inTeam := func(d *Decision) bool { return d.Namespace == "team" }
	var pods []string
	cursor := ""
	for page := 0; ; page++ {
		got, next, err := s.Decisions(Page{Limit: 7, After: cursor}, inTeam)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range got {
			pods = append(pods, d.Pod)
		}
		if next == "" {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if len(pods) != 20 || pods[0] != "p01" || pods[19] != "p24" {
		t.Errorf("paged through %d decisions %v, want the 20 of namespace team in time order", len(pods), pods)
	}
	// A filter that matches nothing reads at most MaxScanned records a call, and says where to
	// go on; the pages still cover everything, once.
	nobody := func(d *Decision) bool { return d.Namespace == "nobody" || d.Pod == "p23" }
	var found []string
	calls := 0
	for cursor := ""; ; calls++ {
		got, next, err := s.Decisions(Page{Limit: 7, After: cursor, MaxScanned: 10}, nobody)
		if err != nil || calls > 5 {
			t.Fatalf("scan-bounded paging: %v after %d calls", err, calls)
		}
		for _, d := range got {
			found = append(found, d.Pod)
		}
		if cursor = next; next == "" {
			break
		}
	}
	if len(found) != 1 || found[0] != "p23" || calls != 2 {
		t.Errorf("scan-bounded paging found %v in %d calls, want p23 in 3 calls of at most 10 records", found, calls+1)
	}
	// The last page of a window says there is no more, even when more records follow it.
	window, next, err := s.Decisions(Page{From: t0.Add(10 * time.Minute), To: t0.Add(12 * time.Minute), Limit: 2}, nil)
	if err != nil || len(window) != 2 || next != "" {
		t.Errorf("a window's only page: %d decisions, next %q, %v; want 2 and no next", len(window), next, err)
	}
	window, _, err = s.Decisions(Page{From: t0.Add(10 * time.Minute), To: t0.Add(12 * time.Minute)}, nil)
	if err != nil || len(window) != 2 || window[0].Pod != "p10" {
		t.Errorf("time window = %+v, %v; want p10 and p11", window, err)
	}
	if _, _, err := s.Decisions(Page{Limit: 1, After: "zz"}, nil); err == nil || !strings.Contains(err.Error(), "cursor") {
		t.Errorf("a bad cursor gave %v, want an error that names it", err)
	}
}

func TestSchemaVersionIsChecked(t *testing.T) {
	s, path := openTemp(t, Options{})
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer than this Repute") {
		t.Errorf("opening a newer schema: %v, want a refusal that says why", err)
	}
}

func TestPrune(t *testing.T) {
	now := t0.Add(48 * time.Hour)
	s, _ := openTemp(t, Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	const img = "r.example/a@sha256:1"
	for i := range 10 {
		if err := s.AppendVerdict(ctx, img, verdictAt(img, reputation.TierTrusted, i, t0.Add(time.Duration(i)*6*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	var ds []Decision
	for i := range 10 {
		ds = append(ds, Decision{Time: t0.Add(time.Duration(i) * 6 * time.Hour), Pod: fmt.Sprint(i)})
	}
	if err := s.AppendDecisions(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(Retention{MaxAge: 24 * time.Hour, MaxHistoryPerImage: 3, MaxDecisions: 2})
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := s.History(img, Page{})
	left, _, _ := s.Decisions(Page{}, nil)
	// History: within 24h of now are entries 4..9 (6 of them); the newest 3 stay.
	if len(h) != 3 || h[0].Verdict.Score != 7 || len(left) != 2 || left[0].Pod != "8" || n != 7+8 {
		t.Errorf("after pruning: history %d (first score %d), decisions %v, removed %d", len(h), h[0].Verdict.Score, left, n)
	}
	if v, _ := s.Verdict(img); v == nil || v.Score != 9 {
		t.Errorf("the current verdict must survive pruning, got %+v", v)
	}
}

func TestBackupAndRestore(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	for i := range 100 {
		if err := s.AppendDecisions(ctx, Decision{Time: t0.Add(time.Duration(i) * time.Second), Pod: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Writes go on while the backup is taken: it is one consistent snapshot.
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				s.RecordDecision(Decision{Time: t0.Add(time.Hour), Pod: fmt.Sprint("late", i)})
			}
		}
	}()
	var backup bytes.Buffer
	if _, err := s.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	close(stop)
	target := filepath.Join(t.TempDir(), "restored.db")
	if err := Restore(bytes.NewReader(backup.Bytes()), target); err != nil {
		t.Fatal(err)
	}
	r, err := Open(target, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _, err := r.Decisions(Page{To: t0.Add(time.Minute * 30)}, nil)
	if err != nil || len(got) != 100 {
		t.Errorf("restored %d decisions before the late ones, want 100 (%v)", len(got), err)
	}
	if err := Restore(strings.NewReader("not a database"), filepath.Join(t.TempDir(), "x.db")); err == nil {
		t.Error("restoring garbage succeeded")
	}
}

// A record the writer cannot take (queue full) is dropped and counted, never waited for.
func TestFullQueueDropsInsteadOfBlocking(t *testing.T) {
	var told atomic.Int64
	s, _ := openTemp(t, Options{QueueSize: 1, MaxBatch: 1, OnDrop: func() { told.Add(1) }})
	start := time.Now()
	for i := range 10000 {
		s.RecordDecision(Decision{Pod: fmt.Sprint(i)})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("queuing 10,000 records took %s: the caller waited for the disk", d)
	}
	if s.Dropped() == 0 {
		t.Error("nothing was dropped from a queue of one")
	}
	if told.Load() != s.Dropped() {
		t.Errorf("OnDrop was told of %d drops, Dropped says %d", told.Load(), s.Dropped())
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Engine workers may publish while the scheduler shuts down: a record after Close is dropped,
// not a panic.
func TestRecordAfterCloseIsDropped(t *testing.T) {
	s, _ := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.RecordDecision(Decision{Pod: "late"}) {
		t.Error("a record was accepted after Close")
	}
	if err := s.AppendDecisions(context.Background(), Decision{Pod: "late"}); err == nil {
		t.Error("an acknowledged write succeeded after Close")
	}
}

// A file whose pages are damaged (a disk error, a torn copy) opens with an error that says what
// to do, for the scheduler and for reputectl alike; it never panics on a later read. Every page
// after the two meta pages is damaged in turn.
func TestCorruptFileIsAnErrorNotAPanic(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	st, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		image := fmt.Sprintf("registry.internal/team/app-%03d:v1", i)
		if err := st.AppendVerdict(context.Background(), image, &reputation.Verdict{Image: image, Tier: reputation.TierTrusted, Score: 90}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	const pageSize = 4096
	refused := 0
	for page := 2; page*pageSize < len(data); page++ {
		damaged := bytes.Clone(data)
		for i := page * pageSize; i < (page+1)*pageSize && i < len(damaged); i++ {
			damaged[i] ^= 0xA5
		}
		path := filepath.Join(dir, fmt.Sprintf("damaged-%d.db", page))
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("page %d damaged: panic %v", page, r)
				}
			}()
			st, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				refused++
				if !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "restore a backup") {
					t.Errorf("page %d damaged: error %q does not say what is wrong and what to do", page, err)
				}
				return
			}
			// A damage the check cannot see must still read without panicking.
			_, _ = st.Verdicts()
			st.Close()
		}()
	}
	if refused == 0 {
		t.Fatal("no damaged file was refused")
	}
	var backup bytes.Buffer
	backup.Write(data[:len(data)/2]) // a truncated backup
	if err := Restore(&backup, filepath.Join(dir, "restored.db")); err == nil {
		t.Error("Restore accepted a truncated backup")
	}
}

// An image reference too long to be a key never reaches the writer, so the records that share
// its batch are kept.
func TestOversizeImageDoesNotFailItsBatch(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "repute.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	huge := "registry.example/" + strings.Repeat("a", 40<<10)
	for i := range 50 {
		st.RecordDecision(Decision{Namespace: "ns", Pod: fmt.Sprintf("p%d", i), Time: time.Now()})
		if i == 25 {
			st.RecordVerdict(huge, &reputation.Verdict{Image: huge, Tier: reputation.TierUntrusted})
		}
	}
	if err := st.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ds, _, err := st.Decisions(Page{}, nil)
	if err != nil || len(ds) != 50 {
		t.Errorf("%d decisions kept (%v), want all 50", len(ds), err)
	}
	if err := st.AppendVerdict(context.Background(), huge, &reputation.Verdict{Image: huge}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("AppendVerdict of an oversize image: %v, want a clear refusal", err)
	}
}

// Forgetting an image drops its current verdict, so a restart does not warm it again, and keeps
// its history for the auditors until retention prunes it.
func TestForgetVerdictKeepsHistory(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	const oneOff, kept = "quay.io/flood/one-off:v1", "registry.internal/team/api:v1"
	for _, image := range []string{oneOff, kept} {
		if err := s.AppendVerdict(ctx, image, verdictAt(image, reputation.TierUnknown, 50, t0)); err != nil {
			t.Fatal(err)
		}
	}
	if !s.ForgetVerdict(oneOff) {
		t.Fatal("the removal was dropped")
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	current, err := s.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := current[oneOff]; ok || current[kept] == nil {
		t.Errorf("current verdicts = %v: want %s gone and %s kept", current, oneOff, kept)
	}
	if h, _, err := s.History(oneOff, Page{}); err != nil || len(h) != 1 {
		t.Errorf("history of the forgotten image = %+v, %v; want its one verdict", h, err)
	}
}
