package app

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

// Metrics are the saga's Prometheus series. Counters move when a decision
// is made inside the consumer's transaction, so a rolled-back and retried
// batch may count twice (at least once); the gauges are read from
// checkout_sagas and are exact. A nil *Metrics records nothing.
type Metrics struct {
	started, completed, compensated, timedOut, failed prometheus.Counter
	reconciling, givenUp                              prometheus.Counter
	step                                              *prometheus.HistogramVec
	inFlight, oldest                                  prometheus.Gauge

	reg prometheus.Registerer // the timer queue's series go there too
}

// NewMetrics registers the saga's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "keel_checkout_" + name, Help: help})
	}
	m := &Metrics{
		started:     c("sagas_started_total", "Checkouts started."),
		completed:   c("sagas_completed_total", "Checkouts completed."),
		compensated: c("sagas_compensated_total", "Checkouts that began compensating."),
		timedOut:    c("sagas_timed_out_total", "Checkouts that passed a deadline (payment or checkout)."),
		failed:      c("sagas_failed_total", "Checkouts that ended fully compensated."),
		reconciling: c("payment_reconciliations_total", "Unanswered authorizations the saga asks the provider about again."),
		givenUp:     c("payment_reconciliations_given_up_total", "Unanswered authorizations left unknown after the last attempt: an operator must look."),
		step: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keel_checkout_step_seconds",
			Help:    "Time from the checkout's start to each forward step's completion.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"step"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keel_checkout_sagas_in_flight", Help: "Checkouts neither completed nor failed."}),
		oldest:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "keel_checkout_oldest_in_flight_seconds", Help: "Age of the oldest checkout in flight."}),
	}
	m.reg = reg
	if reg != nil {
		for _, col := range []prometheus.Collector{m.started, m.completed, m.compensated, m.timedOut, m.failed, m.reconciling, m.givenUp, m.step, m.inFlight, m.oldest} {
			if err := reg.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.reg
}

func (m *Metrics) observe(d domain.Decision, c *domain.Checkout) {
	if m == nil {
		return
	}
	for _, e := range d.Events {
		switch ev := proto.Message(e).(type) {
		case *checkoutv1.CheckoutStarted:
			m.started.Inc()
		case *checkoutv1.CheckoutCompleted:
			m.completed.Inc()
		case *checkoutv1.CheckoutCompensating:
			m.compensated.Inc()
		case *checkoutv1.CheckoutTimedOut:
			m.timedOut.Inc()
		case *checkoutv1.CheckoutFailed:
			m.failed.Inc()
		case *checkoutv1.CheckoutPaymentReconciling:
			if ev.GetRetryAt() == nil {
				m.givenUp.Inc()
			} else {
				m.reconciling.Inc()
			}
		case *checkoutv1.CheckoutStepCompleted:
			v := c.View()
			m.step.WithLabelValues(codec.EnumName(ev.GetStep())).Observe(ev.GetCompletedAt().AsTime().Sub(v.StartedAt).Seconds())
		}
	}
}

func (m *Metrics) refresh(ctx context.Context, pool *pgxpool.Pool, now time.Time) error {
	if m == nil {
		return nil
	}
	var n int64
	var oldest *time.Time
	if err := pool.QueryRow(ctx, `SELECT count(*), min(started_at) FROM checkout_sagas WHERE status NOT IN ('completed', 'failed')`).Scan(&n, &oldest); err != nil {
		return err
	}
	m.inFlight.Set(float64(n))
	if oldest != nil {
		m.oldest.Set(now.Sub(*oldest).Seconds())
	} else {
		m.oldest.Set(0)
	}
	return nil
}
