package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A nil *Metrics records nothing and never panics: components need no nil
// checks of their own.
func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Request("/r", "GET", 200, "HIT", time.Millisecond)
	m.Upstream("/r", 0, errors.New("x"), time.Millisecond)
	m.Coalesce("/r")
	m.Retry("503")
	m.RateWait(time.Millisecond)
	m.AutoBatch(3)
	m.BatchItem(200)
	m.Evicted()
	m.SetBreaker(2)
	m.SetBudget("read", 20)
}

func TestMethodsRecord(t *testing.T) {
	m := New(func() (int, int64) { return 0, 0 })
	m.Upstream("", 0, errors.New("refused"), time.Millisecond)
	m.Upstream("/r", 503, nil, time.Millisecond)
	m.BatchItem(404)
	for _, tt := range []struct {
		name string
		got  float64
	}{
		{`upstream{route="other",code="error"}`, count(t, m.UpstreamRequests.WithLabelValues("other", "error"))},
		{`upstream{route="/r",code="503"}`, count(t, m.UpstreamRequests.WithLabelValues("/r", "503"))},
		{`batch_items{status="404"}`, count(t, m.BatchItems.WithLabelValues("404"))},
	} {
		if tt.got != 1 {
			t.Errorf("%s = %v, want 1", tt.name, tt.got)
		}
	}
	if got := Code(1234); got != "1234" {
		t.Errorf("Code(1234) = %q, want 1234", got)
	}
}

func TestEnableDiskReadsStatsAtScrape(t *testing.T) {
	m := New(func() (int, int64) { return 0, 0 })
	st := DiskStats{Up: true, Items: 3, Bytes: 4096, Hits: 7, Corrupt: 1, Evictions: 2, Writes: 9, Dropped: 4}
	m.EnableDisk(func() DiskStats { return st })
	want := map[string]float64{
		"kproxy_disk_up": 1, "kproxy_disk_items": 3, "kproxy_disk_bytes": 4096, "kproxy_disk_hits_total": 7,
		"kproxy_disk_corrupt_total": 1, "kproxy_disk_evictions_total": 2, "kproxy_disk_writes_total": 9,
		"kproxy_disk_dropped_total": 4,
	}
	check := func(when string) {
		t.Helper()
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			if _, ok := want[mf.GetName()]; ok {
				mt := mf.GetMetric()[0]
				got[mf.GetName()] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
			}
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: %s = %v, want %v", when, name, got[name], w)
			}
		}
	}
	check("up")
	st = DiskStats{}
	want = map[string]float64{"kproxy_disk_up": 0, "kproxy_disk_items": 0}
	check("down")
}
