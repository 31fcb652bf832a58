package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const root = "../../.."

func known(t *testing.T) *Names {
	t.Helper()
	n, err := Known(root)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The names registered three ways (a Name field, a "keel_checkout_" prefix
// completed by a helper, Namespace and Subsystem) are all found.
func TestKnownFindsEachWayOfNaming(t *testing.T) {
	n := known(t)
	for _, name := range []string{
		"keel_relay_lag_seconds", "keel_http_requests_total", // Name: "keel_…"
		"keel_checkout_sagas_started_total", "keel_checkout_payment_reconciliations_given_up_total", // "keel_checkout_" + name
		"keel_consume_dead_letters_total", "keel_timers_oldest_due_age_seconds", // Namespace, Subsystem, Name
		"keel_checkout_step_seconds_bucket", "keel_relay_delivery_seconds_count", // a histogram's series
	} {
		if !n.Has(name) {
			t.Errorf("%s not found in the Go code", name)
		}
	}
	if list := n.Names(); !slices.Contains(list, "keel_timers_due") || slices.Contains(list, "keel_carts") {
		t.Errorf("Names() = %v: want keel_timers_due, not the database keel_carts", list)
	}
}

// An invented name, a database name and a misspelt one are reported; a
// recording rule, an environment variable and a label value are not names.
func TestUnknown(t *testing.T) {
	text := `expr: keel_checkout_stuck_total > 0 or keel_carts or rate(keel_relay_publish_total[5m])
keel:relay_lag_seconds:max KEEL_CHECKOUT_TIMEOUT up{job=~"keel-.*"} keel_consume_lag_records`
	got := known(t).Unknown(text)
	want := []string{"keel_carts", "keel_checkout_stuck_total", "keel_relay_publish_total"}
	if !slices.Equal(got, want) {
		t.Errorf("Unknown = %v, want %v", got, want)
	}
}

// The shipped rules and dashboards name only registered metrics.
func TestDeployedFilesNameRegisteredMetrics(t *testing.T) {
	n := known(t)
	files, _ := filepath.Glob(filepath.Join(root, "deploy/prometheus/*.yml"))
	grafana, _ := filepath.Glob(filepath.Join(root, "deploy/grafana/*.json"))
	files = append(files, grafana...)
	if len(files) == 0 {
		t.Fatal("no files in deploy/prometheus")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bad := n.Unknown(string(b)); len(bad) > 0 {
			t.Errorf("%s names metrics the code does not register: %v", f, bad)
		}
	}
}
