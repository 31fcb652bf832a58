package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	c, err := loadConfig(none)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8085" || c.PaymentTimeout != 10*time.Minute || c.CheckoutTimeout != 15*time.Minute ||
		!strings.HasSuffix(c.DatabaseURL, "/keel_checkout") || c.Partitions != 6 {
		t.Errorf("defaults: %+v", c)
	}
	if c.ResolveBackoff != time.Minute || c.ResolveAttempts != 6 {
		t.Errorf("resolve defaults: %s, %d", c.ResolveBackoff, c.ResolveAttempts)
	}
	bad := map[string]string{"KEEL_CHECKOUT_PAYMENT_TIMEOUT": "20m", "KEEL_CHECKOUT_TIMER_INTERVAL": "-1s", "KEEL_TOPIC_PARTITIONS": "x", "KEEL_CHECKOUT_RESOLVE_ATTEMPTS": "0"}
	_, err = loadConfig(func(k string) (string, bool) { v, ok := bad[k]; return v, ok })
	for _, k := range []string{"KEEL_CHECKOUT_PAYMENT_TIMEOUT", "KEEL_CHECKOUT_TIMER_INTERVAL", "KEEL_TOPIC_PARTITIONS", "KEEL_CHECKOUT_RESOLVE_ATTEMPTS"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error %v does not name %s", err, k)
		}
	}
	if c.attrs() == nil || strings.Contains(redact("postgres://keel:secret@h/db"), "secret") {
		t.Error("password not masked")
	}
}

func TestLoadConfigPrefixAndCrash(t *testing.T) {
	set := map[string]string{"KEEL_TOPIC_PREFIX": "t1.", "KEEL_CRASH_AT": "compensated:place_order@2"}
	c, err := loadConfig(func(k string) (string, bool) { v, ok := set[k]; return v, ok })
	if err != nil || c.TopicPrefix != "t1." || c.CrashAt != "compensated:place_order" || c.CrashAfter != 2 {
		t.Fatalf("config %+v, %v", c, err)
	}
	if got := c.inputTopics(); len(got) != 4 || got[0] != "t1.carts.events" {
		t.Errorf("input topics %v", got)
	}
	for _, bad := range []string{"step:place_order", "@3", "started@0", "started@x"} {
		set["KEEL_CRASH_AT"] = bad
		if _, err := loadConfig(func(k string) (string, bool) { v, ok := set[k]; return v, ok }); err == nil || !strings.Contains(err.Error(), "KEEL_CRASH_AT") {
			t.Errorf("KEEL_CRASH_AT=%q: %v", bad, err)
		}
	}
	if crashHook("", 0, nil) != nil {
		t.Error("no KEEL_CRASH_AT, yet a hook")
	}
}
