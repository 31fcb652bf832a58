package stockhttp

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/stock/app"
	"github.com/keel-commerce/keel/services/stock/domain"
)

// Formats of identifiers, also stated as patterns in openapi.json.
var (
	methodRe = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)
)

var adjustmentReasons = map[string]stockv1.AdjustmentReason{
	"damaged":     stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED,
	"lost":        stockv1.AdjustmentReason_ADJUSTMENT_REASON_LOST,
	"found":       stockv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND,
	"cycle_count": stockv1.AdjustmentReason_ADJUSTMENT_REASON_CYCLE_COUNT,
	"returned":    stockv1.AdjustmentReason_ADJUSTMENT_REASON_RETURNED,
	"correction":  stockv1.AdjustmentReason_ADJUSTMENT_REASON_CORRECTION,
}

var releaseReasons = map[string]stockv1.ReleaseReason{
	"order_cancelled":    stockv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED,
	"payment_failed":     stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED,
	"checkout_failed":    stockv1.ReleaseReason_RELEASE_REASON_CHECKOUT_FAILED,
	"checkout_timed_out": stockv1.ReleaseReason_RELEASE_REASON_CHECKOUT_TIMED_OUT,
	"allocation_failed":  stockv1.ReleaseReason_RELEASE_REASON_ALLOCATION_FAILED,
	"manual":             stockv1.ReleaseReason_RELEASE_REASON_MANUAL,
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func checkCommandID(errs *httpapi.FieldErrors, id string) { errs.ID("command_id", id, false) }

func checkQuantity(errs *httpapi.FieldErrors, field string, q *int64) {
	switch {
	case q == nil:
		errs.Add(field, "is required")
	case *q <= 0:
		errs.Add(field, "must be a positive integer, got %d", *q)
	}
}

// ReceiveRequest is the body of POST /stock/{sku}/receive.
type ReceiveRequest struct {
	CommandID   string `json:"command_id,omitempty"`
	WarehouseID string `json:"warehouse_id"`
	Quantity    *int64 `json:"quantity"`
	Reference   string `json:"reference,omitempty"`
	sku         string // from the path
}

// Validate lists every invalid field.
func (q *ReceiveRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.SKU("sku", q.sku, true)
	checkCommandID(&errs, q.CommandID)
	errs.ID("warehouse_id", q.WarehouseID, true)
	checkQuantity(&errs, "quantity", q.Quantity)
	errs.Text("reference", q.Reference, 256, false)
	return errs
}

// AdjustRequest is the body of POST /stock/{sku}/adjust.
type AdjustRequest struct {
	CommandID   string `json:"command_id,omitempty"`
	WarehouseID string `json:"warehouse_id"`
	Delta       *int64 `json:"delta"`
	Reason      string `json:"reason"`
	Note        string `json:"note,omitempty"`
	sku         string
}

// Validate lists every invalid field.
func (q *AdjustRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.SKU("sku", q.sku, true)
	checkCommandID(&errs, q.CommandID)
	errs.ID("warehouse_id", q.WarehouseID, true)
	switch {
	case q.Delta == nil:
		errs.Add("delta", "is required")
	case *q.Delta == 0:
		errs.Add("delta", "must not be zero")
	}
	if _, ok := adjustmentReasons[q.Reason]; !ok {
		if q.Reason == "" {
			errs.Add("reason", "is required; one of %s", strings.Join(keys(adjustmentReasons), ", "))
		} else {
			errs.Add("reason", "%q is not one of %s", q.Reason, strings.Join(keys(adjustmentReasons), ", "))
		}
	}
	errs.Text("note", q.Note, 1024, false)
	return errs
}

// LineRequest is one line of a reservation.
type LineRequest struct {
	SKU      string `json:"sku"`
	Quantity *int64 `json:"quantity"`
}

// ReserveRequest is the body of POST /reservations.
type ReserveRequest struct {
	CommandID     string        `json:"command_id,omitempty"`
	OrderID       string        `json:"order_id"`
	CheckoutID    string        `json:"checkout_id,omitempty"`
	PaymentMethod string        `json:"payment_method,omitempty"`
	Lines         []LineRequest `json:"lines"`
	TTLSeconds    *int64        `json:"ttl_seconds,omitempty"`
}

// Validate lists every invalid field, every line included.
func (q *ReserveRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	checkCommandID(&errs, q.CommandID)
	errs.ID("order_id", q.OrderID, true)
	errs.ID("checkout_id", q.CheckoutID, false)
	if q.PaymentMethod != "" && !methodRe.MatchString(q.PaymentMethod) {
		errs.Add("payment_method", "must be 1 to 32 lower-case letters, digits, '_' or '-' (pattern %s)", methodRe)
	}
	switch {
	case len(q.Lines) == 0:
		errs.Add("lines", "is required: at least one line")
	case len(q.Lines) > MaxLines:
		errs.Add("lines", "has %d lines; at most %d are allowed", len(q.Lines), MaxLines)
	}
	seen := map[string]int{}
	for i, l := range q.Lines {
		f := fmt.Sprintf("lines.%d.", i)
		errs.SKU(f+"sku", l.SKU, true)
		checkQuantity(&errs, f+"quantity", l.Quantity)
		if j, dup := seen[l.SKU]; dup && l.SKU != "" {
			errs.Add(f+"sku", "sku %s is already on line %d; each SKU at most once", l.SKU, j)
		} else {
			seen[l.SKU] = i
		}
	}
	if q.TTLSeconds != nil && (*q.TTLSeconds <= 0 || *q.TTLSeconds > int64(MaxTTL/time.Second)) {
		errs.Add("ttl_seconds", "must be between 1 and %d seconds, got %d", int64(MaxTTL/time.Second), *q.TTLSeconds)
	}
	return errs
}

func checkIDs(errs *httpapi.FieldErrors, ids []string) {
	if len(ids) > MaxIDs {
		errs.Add("reservation_ids", "has %d ids; at most %d are allowed", len(ids), MaxIDs)
	}
	for i, id := range ids {
		errs.ID(fmt.Sprintf("reservation_ids.%d", i), id, true)
		if slices.Index(ids, id) < i {
			errs.Add(fmt.Sprintf("reservation_ids.%d", i), "%s is listed twice", id)
		}
	}
}

// ReleaseRequest is the body of POST /reservations/{order_id}/release.
type ReleaseRequest struct {
	CommandID      string   `json:"command_id,omitempty"`
	Reason         string   `json:"reason"`
	ReservationIDs []string `json:"reservation_ids,omitempty"`
	orderID        string
}

// Validate lists every invalid field.
func (q *ReleaseRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("order_id", q.orderID, true)
	checkCommandID(&errs, q.CommandID)
	if _, ok := releaseReasons[q.Reason]; !ok {
		if q.Reason == "" {
			errs.Add("reason", "is required; one of %s", strings.Join(keys(releaseReasons), ", "))
		} else {
			errs.Add("reason", "%q is not one of %s", q.Reason, strings.Join(keys(releaseReasons), ", "))
		}
	}
	checkIDs(&errs, q.ReservationIDs)
	return errs
}

// CommitRequest is the (optional) body of POST /reservations/{order_id}/commit.
type CommitRequest struct {
	CommandID      string   `json:"command_id,omitempty"`
	ReservationIDs []string `json:"reservation_ids,omitempty"`
	orderID        string
}

// Validate lists every invalid field.
func (q *CommitRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("order_id", q.orderID, true)
	checkCommandID(&errs, q.CommandID)
	checkIDs(&errs, q.ReservationIDs)
	return errs
}

// CommandResponse answers receive and adjust.
type CommandResponse struct {
	CommandID string `json:"command_id"`
	SKU       string `json:"sku"`
}

// OrderCommandResponse answers release and commit.
type OrderCommandResponse struct {
	CommandID string `json:"command_id"`
	OrderID   string `json:"order_id"`
}

// ReservationResponse answers an accepted reservation: where each line's
// units are held and until when.
type ReservationResponse struct {
	CommandID string `json:"command_id"`
	app.Allocation
}

// StockResponse is a SKU's current state.
type StockResponse struct {
	SKU          string                `json:"sku"`
	Version      int64                 `json:"version"`
	OnHand       int64                 `json:"on_hand"`
	Reserved     int64                 `json:"reserved"`
	Available    int64                 `json:"available"`
	Warehouses   []WarehouseResponse   `json:"warehouses"`
	Reservations []ReservationHoldView `json:"reservations"`
}

// WarehouseResponse is one warehouse's units of a SKU.
type WarehouseResponse struct {
	WarehouseID string `json:"warehouse_id"`
	OnHand      int64  `json:"on_hand"`
	Reserved    int64  `json:"reserved"`
	Available   int64  `json:"available"`
}

// ReservationHoldView is an open reservation of a SKU.
type ReservationHoldView struct {
	ReservationID string    `json:"reservation_id"`
	OrderID       string    `json:"order_id"`
	WarehouseID   string    `json:"warehouse_id"`
	Quantity      int64     `json:"quantity"`
	ExpiresAt     time.Time `json:"expires_at"`
}

func stockView(st *domain.Stock, version int64) StockResponse {
	out := StockResponse{SKU: st.SKU(), Version: version, Warehouses: []WarehouseResponse{}, Reservations: []ReservationHoldView{}}
	whs := st.Warehouses()
	for _, id := range keys(whs) {
		w := whs[id]
		out.Warehouses = append(out.Warehouses, WarehouseResponse{WarehouseID: id, OnHand: w.OnHand, Reserved: w.Reserved, Available: w.Available()})
		out.OnHand += w.OnHand
		out.Reserved += w.Reserved
	}
	out.Available = out.OnHand - out.Reserved
	for _, r := range st.Reservations() {
		out.Reservations = append(out.Reservations, ReservationHoldView{ReservationID: r.ID, OrderID: r.Order,
			WarehouseID: r.Warehouse, Quantity: r.Quantity, ExpiresAt: r.ExpiresAt.UTC()})
	}
	return out
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
