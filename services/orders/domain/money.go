package domain

import (
	"fmt"
	"math"

	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// money builds a Money value; amounts are integer minor units, never floats.
func money(amount int64, currency string) *typesv1.Money {
	return &typesv1.Money{AmountMinor: amount, Currency: currency}
}

// mul returns a×q, refusing overflow.
func mul(a, q int64) (int64, error) {
	if a < 0 || q < 0 {
		return 0, fmt.Errorf("%w: negative amount or quantity", ErrInvalid)
	}
	if q != 0 && a > math.MaxInt64/q {
		return 0, fmt.Errorf("%w: %d × %d", ErrOverflow, a, q)
	}
	return a * q, nil
}

// add returns a+b for non-negative a and b, refusing overflow.
func add(a, b int64) (int64, error) {
	if b > math.MaxInt64-a {
		return 0, fmt.Errorf("%w: %d + %d", ErrOverflow, a, b)
	}
	return a + b, nil
}

// amountIn returns m's amount after checking it is non-negative and in
// currency; a nil m counts as zero.
func amountIn(m *typesv1.Money, currency, what string) (int64, error) {
	if m == nil {
		return 0, nil
	}
	if m.GetCurrency() != currency && !(m.GetAmountMinor() == 0 && m.GetCurrency() == "") {
		return 0, fmt.Errorf("%w: %s in %q, order in %q", ErrCurrencyMismatch, what, m.GetCurrency(), currency)
	}
	if m.GetAmountMinor() < 0 {
		return 0, fmt.Errorf("%w: %s is negative", ErrInvalid, what)
	}
	return m.GetAmountMinor(), nil
}
