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
	bad := map[string]string{"KEEL_CHECKOUT_PAYMENT_TIMEOUT": "20m", "KEEL_CHECKOUT_TIMER_INTERVAL": "-1s", "KEEL_TOPIC_PARTITIONS": "x"}
	_, err = loadConfig(func(k string) (string, bool) { v, ok := bad[k]; return v, ok })
	for _, k := range []string{"KEEL_CHECKOUT_PAYMENT_TIMEOUT", "KEEL_CHECKOUT_TIMER_INTERVAL", "KEEL_TOPIC_PARTITIONS"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error %v does not name %s", err, k)
		}
	}
	if c.attrs() == nil || strings.Contains(redact("postgres://keel:secret@h/db"), "secret") {
		t.Error("password not masked")
	}
}
