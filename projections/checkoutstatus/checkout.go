// Package checkoutstatus keeps one row per checkout: where the saga
// stands, which cart, order and payment it concerns, the steps done and
// undone, and why it failed. It reads the checkout context, and every row
// is the fold of one checkout's stream (checkout-<id>), so any
// interleaving of checkouts gives the same rows. (A rebuild also reads the
// saga's outbox-<id> streams from the store: commands, ignored here.)
//
// Status:
//
//   - running: CheckoutStarted, forward steps under way;
//   - compensating: CheckoutCompensating, completed steps being undone;
//   - completed: CheckoutCompleted, a confirmed and paid order;
//   - failed: CheckoutFailed, every completed step undone;
//   - timed_out: CheckoutFailed of a checkout that had passed a deadline
//     (CheckoutTimedOut, which the saga follows at once with
//     compensation: until that ends the status is compensating, with
//     TimedOutAt and AwaitedStep set).
package checkoutstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the projection's name.
const Name = "checkout_status"

// Statuses.
const (
	StatusRunning      = "running"
	StatusCompensating = "compensating"
	StatusCompleted    = "completed"
	StatusFailed       = "failed"
	StatusTimedOut     = "timed_out"
)

// Step states.
const (
	StepCompleted   = "completed"
	StepCompensated = "compensated"
	// StepReconciling is an authorization the provider left unanswered,
	// asked again (Reference "attempt N", or "given up" once the saga
	// stopped asking and the payment needs an operator).
	StepReconciling = "reconciling"
)

// Checkout is a row.
type Checkout struct {
	CheckoutID string `json:"checkout_id"`
	CartID     string `json:"cart_id"`
	OrderID    string `json:"order_id"`
	PaymentID  string `json:"payment_id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	// FailureReason is the saga's reason in lower case ("out_of_stock",
	// "payment_declined", "payment_timed_out", "order_rejected",
	// "timed_out"), set from compensation on; FailureDetail its text.
	FailureReason string `json:"failure_reason,omitempty"`
	FailureDetail string `json:"failure_detail,omitempty"`
	// AwaitedStep is the step awaited when a deadline passed.
	AwaitedStep string    `json:"awaited_step,omitempty"`
	Steps       []Step    `json:"steps"`
	TotalMinor  int64     `json:"total_minor"`
	Currency    string    `json:"currency"`
	StartedAt   time.Time `json:"started_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Deadline    time.Time `json:"deadline"`
	TimedOutAt  time.Time `json:"timed_out_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"` // completed or failed
}

// Step is one step done (completed) or undone (compensated), in the order
// the saga recorded them.
type Step struct {
	Step      string    `json:"step"` // "place_order", "reserve_stock", ...
	State     string    `json:"state"`
	Reference string    `json:"reference,omitempty"`
	At        time.Time `json:"at"`
}

// Checkouts is the table, one row per checkout. Its indexes serve List
// (by customer, by status, all; newest first) and the lookup by cart.
var Checkouts = &readmodel.Table[Checkout]{
	TableDef: readmodel.TableDef{
		Name: "checkouts",
		Columns: []readmodel.Column{
			{Name: "checkout_id", Type: readmodel.Text},
			{Name: "cart_id", Type: readmodel.Text},
			{Name: "order_id", Type: readmodel.Text},
			{Name: "payment_id", Type: readmodel.Text},
			{Name: "customer_id", Type: readmodel.Text},
			{Name: "status", Type: readmodel.Text},
			{Name: "failure_reason", Type: readmodel.Text},
			{Name: "failure_detail", Type: readmodel.Text},
			{Name: "awaited_step", Type: readmodel.Text},
			{Name: "steps", Type: readmodel.JSON},
			{Name: "total_minor", Type: readmodel.Int},
			{Name: "currency", Type: readmodel.Text},
			{Name: "started_at", Type: readmodel.Time},
			{Name: "updated_at", Type: readmodel.Time},
			{Name: "deadline", Type: readmodel.Time},
			{Name: "timed_out_at", Type: readmodel.Time},
			{Name: "ended_at", Type: readmodel.Time},
		},
		Key: 1,
		Indexes: []string{
			"customer_id, started_at DESC, checkout_id DESC",
			"status, started_at DESC, checkout_id DESC",
			"started_at DESC, checkout_id DESC",
			"cart_id, started_at DESC, checkout_id DESC",
		},
	},
	Encode: func(c Checkout) []any {
		steps := c.Steps
		if steps == nil {
			steps = []Step{}
		}
		js, _ := json.Marshal(steps) // plain structs: cannot fail
		return []any{c.CheckoutID, c.CartID, c.OrderID, c.PaymentID, c.CustomerID, c.Status, c.FailureReason,
			c.FailureDetail, c.AwaitedStep, js, c.TotalMinor, c.Currency, c.StartedAt, c.UpdatedAt, c.Deadline,
			c.TimedOutAt, c.EndedAt}
	},
	Decode: func(v []any) (Checkout, error) {
		c := Checkout{CheckoutID: v[0].(string), CartID: v[1].(string), OrderID: v[2].(string), PaymentID: v[3].(string),
			CustomerID: v[4].(string), Status: v[5].(string), FailureReason: v[6].(string), FailureDetail: v[7].(string),
			AwaitedStep: v[8].(string), TotalMinor: v[10].(int64), Currency: v[11].(string), StartedAt: v[12].(time.Time),
			UpdatedAt: v[13].(time.Time), Deadline: v[14].(time.Time), TimedOutAt: v[15].(time.Time), EndedAt: v[16].(time.Time)}
		if err := json.Unmarshal(v[9].([]byte), &c.Steps); err != nil {
			return c, err
		}
		for i := range c.Steps { // JSON times come back in the zone they were written in
			c.Steps[i].At = c.Steps[i].At.UTC()
		}
		return c, nil
	},
}

type projection struct{}

// New returns the checkout status projection.
func New() readmodel.Projection { return projection{} }

func (projection) Name() string                  { return Name }
func (projection) Sources() []string             { return []string{"checkout"} }
func (projection) Tables() []*readmodel.TableDef { return []*readmodel.TableDef{&Checkouts.TableDef} }

// Apply folds one checkout event into its checkout's row.
func (projection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	var id string
	var ts *timestamppb.Timestamp
	switch m := ev.Message.(type) {
	case *checkoutv1.CheckoutStarted:
		id, ts = m.GetCheckoutId(), m.GetStartedAt()
	case *checkoutv1.CheckoutStepCompleted:
		id, ts = m.GetCheckoutId(), m.GetCompletedAt()
	case *checkoutv1.CheckoutCompleted:
		id, ts = m.GetCheckoutId(), m.GetCompletedAt()
	case *checkoutv1.CheckoutTimedOut:
		id, ts = m.GetCheckoutId(), m.GetTimedOutAt()
	case *checkoutv1.CheckoutCompensating:
		id, ts = m.GetCheckoutId(), m.GetStartedAt()
	case *checkoutv1.CheckoutStepCompensated:
		id, ts = m.GetCheckoutId(), m.GetCompensatedAt()
	case *checkoutv1.CheckoutFailed:
		id, ts = m.GetCheckoutId(), m.GetFailedAt()
	case *checkoutv1.CheckoutPaymentReconciling:
		id, ts = m.GetCheckoutId(), m.GetRecordedAt()
	default:
		return nil // the outbox's commands, other contexts' types
	}
	c, _, err := Checkouts.Get(ctx, rows, id)
	if err != nil {
		return err
	}
	at := ev.RecordedAt
	if ts != nil {
		at = ts.AsTime()
	}
	c.CheckoutID, c.UpdatedAt = id, at
	switch m := ev.Message.(type) {
	case *checkoutv1.CheckoutStarted:
		total := m.GetTotals().GetTotal()
		c.CartID, c.OrderID, c.PaymentID, c.CustomerID = m.GetCartId(), m.GetOrderId(), m.GetPaymentId(), m.GetCustomer().GetCustomerId()
		c.Status, c.TotalMinor, c.Currency = StatusRunning, total.GetAmountMinor(), total.GetCurrency()
		c.StartedAt = at
		if m.GetDeadline() != nil {
			c.Deadline = m.GetDeadline().AsTime()
		}
	case *checkoutv1.CheckoutStepCompleted:
		c.Steps = append(c.Steps, Step{Step: StepName(m.GetStep()), State: StepCompleted, Reference: m.GetReference(), At: at})
	case *checkoutv1.CheckoutCompleted:
		c.Status, c.EndedAt = StatusCompleted, at
		if m.GetOrderId() != "" {
			c.OrderID = m.GetOrderId()
		}
		if m.GetPaymentId() != "" {
			c.PaymentID = m.GetPaymentId()
		}
	case *checkoutv1.CheckoutTimedOut:
		c.TimedOutAt, c.AwaitedStep = at, StepName(m.GetAwaitedStep())
	case *checkoutv1.CheckoutCompensating:
		c.Status, c.FailureReason, c.FailureDetail = StatusCompensating, ReasonName(m.GetReason()), m.GetDetail()
	case *checkoutv1.CheckoutStepCompensated:
		c.Steps = append(c.Steps, Step{Step: StepName(m.GetStep()), State: StepCompensated, At: at})
	case *checkoutv1.CheckoutPaymentReconciling:
		ref := fmt.Sprintf("attempt %d", m.GetAttempt())
		if m.GetRetryAt() == nil {
			ref = "given up"
		}
		c.Steps = append(c.Steps, Step{Step: StepName(checkoutv1.Step_STEP_AUTHORIZE_PAYMENT), State: StepReconciling, Reference: ref, At: at})
	case *checkoutv1.CheckoutFailed:
		c.Status, c.FailureReason, c.FailureDetail, c.EndedAt = StatusFailed, ReasonName(m.GetReason()), m.GetDetail(), at
		if !c.TimedOutAt.IsZero() {
			c.Status = StatusTimedOut
		}
	}
	return Checkouts.Put(ctx, rows, c)
}

// StepName is a saga step as the checkout API names it: "place_order",
// "reserve_stock", ... (codec.EnumName).
func StepName(s checkoutv1.Step) string { return codec.EnumName(s) }

// ReasonName is a failure reason as the checkout API names it:
// "out_of_stock", "payment_declined", ... (codec.EnumName).
func ReasonName(r checkoutv1.FailureReason) string { return codec.EnumName(r) }
