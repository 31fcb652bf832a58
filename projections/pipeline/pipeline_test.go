package pipeline_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
	"github.com/segmentio/ksuid"
)

// stack is one run's processes, by name.
type stack map[string]*testenv.Proc

func (s stack) url(name, path string) string {
	return "http://" + strings.TrimSuffix(strings.TrimPrefix(s[name].Ready, "http://"), "/readyz") + path
}

// send posts body to a service and fails the test on anything but 2xx.
func (s stack) send(t *testing.T, name, path, body string) []byte {
	t.Helper()
	res, err := http.Post(s.url(name, path), "application/json", strings.NewReader(body))
	testenv.Must(t, err, "POST %s %s", name, path)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		t.Fatalf("POST %s %s: %s %s", name, path, res.Status, b)
	}
	return b
}

// await polls GET path on a process until ok accepts the 200 body.
func (s stack) await(t *testing.T, name, path string, ok func(b []byte) bool) []byte {
	t.Helper()
	var last []byte
	for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		res, err := http.Get(s.url(name, path))
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if last = b; res.StatusCode == http.StatusOK && ok(b) {
			return b
		}
		last = append([]byte(res.Status+" "), b...)
	}
	for _, p := range s {
		p.Running(t)
	}
	t.Fatalf("GET %s %s: not as expected after 90 s; last answer %s", name, path, last)
	return nil
}

// holds reports whether the JSON body holds every value as a string (or,
// for numbers, a bare number).
func holds(vals ...string) func([]byte) bool {
	return func(b []byte) bool {
		for _, v := range vals {
			if !bytes.Contains(b, []byte(v)) {
				return false
			}
		}
		return true
	}
}

func quoted(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestEdgeValuesReachEveryReadModel(t *testing.T) {
	bin := testenv.Build(t, "./services/carts/cmd/catalog", "./services/carts/cmd/carts", "./services/stock/cmd/stock",
		"./services/orders/cmd/orders", "./services/payments/cmd/payments", "./services/checkout/cmd/checkout",
		"./events/cmd/keel-relay", "./projections/cmd/keel-projections")
	prefix := "edge-" + strings.ToLower(ksuid.New().String()[:12]) + "."
	var names []string
	for _, c := range []string{"carts", "orders", "stock", "payments"} {
		names = append(names, prefix+topics.Events(c), topics.DLQ(prefix+topics.Events(c)),
			prefix+topics.Commands(c), topics.DLQ(prefix+topics.Commands(c)))
	}
	names = append(names, prefix+topics.Events("checkout"), topics.DLQ(prefix+topics.Events("checkout")))
	testenv.CreateTopics(t, 6, names...) // keel-projections wants 6
	dbs := map[string]string{}
	for _, c := range []string{"catalog", "carts", "stock", "orders", "payments", "checkout", "projections"} {
		dbs[c] = testenv.DatabaseURL(t)
	}
	common := []string{"KEEL_KAFKA_BROKERS=" + strings.Join(testenv.KafkaBrokers(), ","), "KEEL_TOPIC_PREFIX=" + prefix,
		"KEEL_TOPIC_PARTITIONS=6", "KEEL_LOG_LEVEL=warn"}
	s := stack{}
	run := func(name, binary, db string, env ...string) {
		addr := testenv.FreeAddr(t)
		p := &testenv.Proc{Name: name, Bin: filepath.Join(bin, binary), Ready: "http://" + addr + "/readyz",
			Env: append(append(append([]string{}, common...), "KEEL_DATABASE_URL="+db, "KEEL_HTTP_ADDR="+addr), env...)}
		s[name] = p
		p.Start(t)
	}
	run("catalog", "catalog", dbs["catalog"])
	run("carts", "carts", dbs["carts"], "KEEL_CATALOG_DATABASE_URL="+dbs["catalog"])
	run("stock", "stock", dbs["stock"], "KEEL_STOCK_WAREHOUSES=wh-1")
	run("orders", "orders", dbs["orders"])
	run("payments", "payments", dbs["payments"], "KEEL_PAYMENTS_DECLINE_RATE=0", "KEEL_PAYMENTS_TIMEOUT_RATE=0", "KEEL_PAYMENTS_AMBIGUOUS_RATE=0")
	run("checkout", "checkout", dbs["checkout"], "KEEL_CHECKOUT_TIMER_INTERVAL=200ms")
	run("projections", "keel-projections", dbs["projections"])
	for _, c := range []string{"carts", "stock", "orders", "payments"} {
		addr := testenv.FreeAddr(t)
		p := &testenv.Proc{Name: "relay-" + c, Bin: filepath.Join(bin, "keel-relay"), Ready: "http://" + addr + "/healthz",
			Env: append(append([]string{}, common...), "KEEL_CONTEXT="+c, "KEEL_DATABASE_URL="+dbs[c],
				"KEEL_TOPIC="+prefix+topics.Events(c), "KEEL_METRICS_ADDR="+addr)}
		s[p.Name] = p
		p.Start(t)
	}

	// The longest values every field takes, in four scripts and emoji
	// (one to four bytes each in UTF-8), and the widest numbers: a line
	// of the most units a cart takes at a price whose total still fits
	// an int64, stock received by the int64's maximum.
	long := edgetest.Long
	sku := "SKU-" + strings.Repeat("9", 60)
	bigSKU := "B" + strings.Repeat("b", 63)
	product := long(httpapi.MaxName)
	const qty, price = 999, 9_000_000_000_000_000
	cart, customer, co := edgetest.ID(httpapi.MaxIDLength), "C"+strings.Repeat("c", httpapi.MaxIDLength-1), "K"+strings.Repeat("k", 63)
	order := "order-" + co
	name, line1, line2 := long(httpapi.MaxName), "1"+long(httpapi.MaxName-1), "2"+long(httpapi.MaxName-1)
	city, region, postal := long(httpapi.MaxShortText), "R"+long(httpapi.MaxShortText-1), long(httpapi.MaxPostalCode)
	email, token := long(httpapi.MaxEmail-2)+"@x", long(httpapi.MaxToken)

	s.send(t, "catalog", "/products", fmt.Sprintf(`{"sku":%q,"name":%s,"unit_price":{"amount_minor":%d,"currency":"EUR"}}`, sku, quoted(product), price))
	s.send(t, "stock", "/stock/"+sku+"/receive", fmt.Sprintf(`{"warehouse_id":"wh-1","quantity":%d,"reference":%s}`, qty, quoted(long(256))))
	s.send(t, "stock", "/stock/"+sku+"/adjust", fmt.Sprintf(`{"warehouse_id":"wh-1","delta":1,"reason":"found","note":%s}`, quoted(long(1024))))
	s.send(t, "stock", "/stock/"+bigSKU+"/receive", `{"warehouse_id":"wh-1","quantity":9223372036854775807}`)
	s.send(t, "carts", "/carts", fmt.Sprintf(`{"command_id":%q,"cart_id":%q,"customer_id":%q,"currency":"EUR"}`, edgetest.ID(128), cart, customer))
	s.send(t, "carts", "/carts/"+cart+"/lines", fmt.Sprintf(`{"sku":%q,"quantity":%d}`, sku, qty))
	s.send(t, "carts", "/carts/"+cart+"/checkout", fmt.Sprintf(`{"checkout_id":%q,"customer":{"customer_id":%q,"email":%s,"name":%s},
		"shipping_address":{"name":%s,"line1":%s,"line2":%s,"city":%s,"region":%s,"postal_code":%s,"country_code":"DE"},
		"payment_method":{"kind":"card","token":%s}}`, co, customer, quoted(email), quoted(name),
		quoted(name), quoted(line1), quoted(line2), quoted(city), quoted(region), quoted(postal), quoted(token)))

	// The saga takes it to the end through orders, stock and payments.
	s.await(t, "checkout", "/checkouts/"+co+"?until=ended&wait=10s", holds(`"status":"completed"`))

	total := strconv.FormatInt(qty*price, 10)
	s.await(t, "projections", "/carts/"+cart, holds(quoted(cart), quoted(customer), quoted(sku), quoted(product)))
	s.await(t, "projections", "/checkouts/"+co, holds(quoted(co), quoted(cart), `"completed"`))
	s.await(t, "projections", "/orders/"+order, holds(quoted(order), quoted(customer), quoted(email), quoted(name), quoted(line1),
		quoted(line2), quoted(city), quoted(region), quoted(postal), quoted(sku), quoted(product), total))
	s.await(t, "projections", "/customers/"+customer+"/orders", holds(quoted(order), total))
	s.await(t, "projections", "/stock/"+sku, holds(quoted(sku), `"on_hand":`+strconv.Itoa(qty+1-qty)))
	s.await(t, "projections", "/stock/"+bigSKU, holds(quoted(bigSKU), "9223372036854775807"))
	hour := time.Now().UTC().Truncate(time.Hour)
	span := "from=" + hour.Add(-time.Hour).Format(time.RFC3339) + "&to=" + hour.Add(2*time.Hour).Format(time.RFC3339)
	s.await(t, "projections", "/analytics/sales?"+span+"&sku="+sku, holds(quoted(sku), total))
	s.await(t, "projections", "/analytics/top-skus?"+span, holds(quoted(sku)))
	s.await(t, "projections", "/analytics/funnel?"+span, holds(`"completed":1`))
}
