package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestStatusShowsTheData (issue 22): readings stored through the broker (QoS 0 and 1, and
// a duplicate that is not) show in Status().Series, the status page's data: the last value
// and event time of each series and its recent values in order.
func TestStatusShowsTheData(t *testing.T) {
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", "")
	r := start(t, path, clock.Real{})
	c := testutil.Paho(t, r.g.BrokerAddrs()[0], "dev-1")
	ts := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for i, v := range []float64{20.5, 21, 21.5} {
		publish(t, c, "devices/d1/temperature", 1, fmt.Sprintf(`{"id": "t%d", "value": %v, "ts": %d}`, i, v, ts.Add(time.Duration(i)*time.Second).UnixMilli()))
	}
	publish(t, c, "devices/d1/temperature", 1, fmt.Sprintf(`{"id": "t1", "value": 99, "ts": %d}`, ts.UnixMilli())) // a duplicate id: not stored, not shown
	publish(t, c, "plain/d2", 1, "3.25")
	testutil.Eventually(t, 10*time.Second, "both series in the status", func() bool { return len(r.g.Status().Series) == 2 })
	got := r.g.Status().Series
	if s := got[0]; s.Series != "d2/value" || s.Value != 3.25 || s.Unit != "V" || fmt.Sprint(s.Values) != "[3.25]" {
		t.Errorf("newest series: %+v", s)
	}
	if s := got[1]; s.Series != "d1/temperature" || s.Value != 21.5 || !s.Time.Equal(ts.Add(2*time.Second)) ||
		fmt.Sprint(s.Values) != "[20.5 21 21.5]" || !s.From.Equal(ts) {
		t.Errorf("d1/temperature: %+v", s)
	}
}
