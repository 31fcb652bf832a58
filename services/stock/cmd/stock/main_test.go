package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	t.Setenv("KEEL_DATABASE_URL", "")
	t.Setenv("KEEL_PG_URL", "postgres://keel:s3cret@db:5432/postgres")
	t.Setenv("KEEL_STOCK_TTL", "20m")
	t.Setenv("KEEL_STOCK_TTL_BY_METHOD", "card=15m, invoice=72h")
	t.Setenv("KEEL_STOCK_WAREHOUSES", "wh-1, wh-2")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://keel:s3cret@db:5432/keel_stock" || c.TTL != 20*time.Minute ||
		c.TTLByMethod["invoice"] != 72*time.Hour || c.TTLByMethod["card"] != 15*time.Minute ||
		fmt.Sprint(c.Warehouses) != "[wh-1 wh-2]" || c.HTTPAddr != "127.0.0.1:8081" || c.Partitions != 6 || c.Replication != 1 {
		t.Errorf("config = %+v", c)
	}
	if s := fmt.Sprint(c.attrs()...); strings.Contains(s, "s3cret") {
		t.Errorf("start-up log shows the password: %s", s)
	}

	t.Setenv("KEEL_STOCK_TTL_BY_METHOD", "card=15m,invoice")
	t.Setenv("KEEL_STOCK_TTL", "-1m")
	t.Setenv("KEEL_TOPIC_PARTITIONS", "0")
	_, err = loadConfig()
	for _, want := range []string{"KEEL_STOCK_TTL:", `KEEL_STOCK_TTL_BY_METHOD: "invoice"`, "KEEL_TOPIC_PARTITIONS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
