package cart

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kstate-dev/kstate/pkg/sdk"
)

// Event types the cart takes and emits.
const (
	TypeItemAdded   = "com.example.cart.ItemAdded"
	TypeItemRemoved = "com.example.cart.ItemRemoved"
	TypeCheckedOut  = "com.example.cart.CheckedOut"
	// TypeGet reads the cart, like a plain HTTP GET. It exists so that the
	// cart can be read with a CloudEvent where every request must be one
	// (a Service whose kstate.dev/key is a ce: spec).
	TypeGet = "com.example.cart.Get"

	// TypeCartCheckedOut is emitted once per checkout, with the cart as data.
	TypeCartCheckedOut = "com.example.cart.CartCheckedOut"
	// Source is the source of the emitted events.
	Source = "/kstate/examples/cart"
)

// Limits on a cart. Within them no total can overflow an int64:
// MaxLines × MaxQuantity × MaxPriceCents = 10^16.
const (
	MaxLines      = 100
	MaxQuantity   = 1_000_000
	MaxPriceCents = 100_000_000 // 1,000,000.00
	MaxSKULen     = 128
)

// Status values of a cart.
const (
	StatusOpen       = "open"
	StatusCheckedOut = "checked_out"
)

// State is what is stored per cart.
type State struct {
	Items      []Item `json:"items"`
	CheckedOut bool   `json:"checked_out,omitempty"`
}

// Item is one line of a stored cart.
type Item struct {
	SKU        string `json:"sku"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// Cart is the reply to every event and the data of the CartCheckedOut event.
type Cart struct {
	CartID     string `json:"cart_id"`
	Status     string `json:"status"`
	Items      []Line `json:"items"`
	ItemCount  int64  `json:"item_count"`
	TotalCents int64  `json:"total_cents"`
}

// Line is one line of a Cart.
type Line struct {
	SKU           string `json:"sku"`
	Quantity      int64  `json:"quantity"`
	PriceCents    int64  `json:"price_cents"`
	SubtotalCents int64  `json:"subtotal_cents"`
}

// Handler returns the cart function.
func Handler() sdk.Handler { return sdk.JSON(handle) }

func handle(_ context.Context, key string, s *State, ev sdk.Event) (sdk.Result, error) {
	switch ev.Type() {
	case TypeGet, sdk.HTTPType(http.MethodGet), sdk.HTTPType(http.MethodHead):
		return sdk.ReplyJSON(view(key, s)), nil
	case TypeItemAdded:
		if err := checkOpen(key, s); err != nil {
			return sdk.Result{}, err
		}
		if err := add(s, ev); err != nil {
			return sdk.Result{}, err
		}
		return sdk.ReplyJSON(view(key, s)).Save(), nil
	case TypeItemRemoved:
		if err := checkOpen(key, s); err != nil {
			return sdk.Result{}, err
		}
		if err := remove(s, ev); err != nil {
			return sdk.Result{}, err
		}
		return sdk.ReplyJSON(view(key, s)).Save(), nil
	case TypeCheckedOut:
		if err := checkOpen(key, s); err != nil {
			return sdk.Result{}, err
		}
		if len(s.Items) == 0 {
			return sdk.Result{}, sdk.Errorf(http.StatusBadRequest, "cannot check out cart %q: it is empty", key)
		}
		s.CheckedOut = true
		c := view(key, s)
		out, err := checkedOutEvent(key, c, ev)
		if err != nil {
			return sdk.Result{}, err
		}
		return sdk.ReplyJSON(c).Save().Emit(out), nil
	default:
		return sdk.Result{}, sdk.Errorf(http.StatusBadRequest,
			"unsupported event type %q: expected %s, %s, %s, or a read (%s, HTTP GET)",
			ev.Type(), TypeItemAdded, TypeItemRemoved, TypeCheckedOut, TypeGet)
	}
}

func checkOpen(key string, s *State) error {
	if s.CheckedOut {
		return sdk.Errorf(http.StatusBadRequest, "cart %q is checked out: it takes no more changes", key)
	}
	return nil
}

// lineInput is the data of ItemAdded and ItemRemoved. Pointers tell a
// missing field from a zero one.
type lineInput struct {
	SKU        *string `json:"sku"`
	Quantity   *int64  `json:"quantity"`
	PriceCents *int64  `json:"price_cents"`
}

// decodeLine decodes and checks the fields both events share.
func decodeLine(ev sdk.Event) (lineInput, string, int64, error) {
	var in lineInput
	if err := ev.DecodeJSON(&in); err != nil {
		return in, "", 0, err
	}
	if in.SKU == nil || strings.TrimSpace(*in.SKU) == "" {
		return in, "", 0, sdk.Errorf(http.StatusBadRequest, `data field "sku" is required and must not be blank`)
	}
	if len(*in.SKU) > MaxSKULen {
		return in, "", 0, sdk.Errorf(http.StatusBadRequest, `data field "sku" must be at most %d bytes, got %d`, MaxSKULen, len(*in.SKU))
	}
	if in.Quantity == nil {
		return in, "", 0, sdk.Errorf(http.StatusBadRequest, `data field "quantity" is required`)
	}
	if *in.Quantity <= 0 {
		return in, "", 0, sdk.Errorf(http.StatusBadRequest, `data field "quantity" must be a positive integer, got %d`, *in.Quantity)
	}
	return in, *in.SKU, *in.Quantity, nil
}

func add(s *State, ev sdk.Event) error {
	in, sku, qty, err := decodeLine(ev)
	if err != nil {
		return err
	}
	switch {
	case in.PriceCents == nil:
		return sdk.Errorf(http.StatusBadRequest, `data field "price_cents" is required`)
	case *in.PriceCents < 0:
		return sdk.Errorf(http.StatusBadRequest, `data field "price_cents" must be 0 or more, got %d`, *in.PriceCents)
	case *in.PriceCents > MaxPriceCents:
		return sdk.Errorf(http.StatusBadRequest, `data field "price_cents" must be at most %d, got %d`, MaxPriceCents, *in.PriceCents)
	}
	i := find(s, sku)
	if i < 0 {
		if len(s.Items) >= MaxLines {
			return sdk.Errorf(http.StatusBadRequest, `data field "sku": cannot add %q, the cart already holds %d different SKUs, the limit`, sku, MaxLines)
		}
		s.Items = append(s.Items, Item{SKU: sku})
		i = len(s.Items) - 1
	}
	it := &s.Items[i]
	if qty > MaxQuantity-it.Quantity {
		return sdk.Errorf(http.StatusBadRequest, `data field "quantity": adding %d to the %d of sku %q in the cart exceeds the limit of %d per SKU`,
			qty, it.Quantity, sku, MaxQuantity)
	}
	it.Quantity += qty
	it.PriceCents = *in.PriceCents
	return nil
}

func remove(s *State, ev sdk.Event) error {
	_, sku, qty, err := decodeLine(ev)
	if err != nil {
		return err
	}
	i := find(s, sku)
	if i < 0 {
		return sdk.Errorf(http.StatusBadRequest, `data field "sku": %q is not in the cart`, sku)
	}
	it := &s.Items[i]
	if qty > it.Quantity {
		return sdk.Errorf(http.StatusBadRequest, `data field "quantity": cannot remove %d of sku %q, the cart holds %d`, qty, sku, it.Quantity)
	}
	it.Quantity -= qty
	if it.Quantity == 0 {
		s.Items = append(s.Items[:i], s.Items[i+1:]...)
	}
	return nil
}

func find(s *State, sku string) int {
	for i, it := range s.Items {
		if it.SKU == sku {
			return i
		}
	}
	return -1
}

// view is the cart as the reply shows it.
func view(key string, s *State) Cart {
	c := Cart{CartID: key, Status: StatusOpen, Items: make([]Line, 0, len(s.Items))}
	if s.CheckedOut {
		c.Status = StatusCheckedOut
	}
	for _, it := range s.Items {
		sub := it.Quantity * it.PriceCents
		c.Items = append(c.Items, Line{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents, SubtotalCents: sub})
		c.ItemCount += it.Quantity
		c.TotalCents += sub
	}
	return c
}

// checkedOutEvent is the event a checkout emits. Its ID is left empty: the
// SDK derives it from the input event, so a checkout that runs again after a
// crash emits the same ID and receivers can deduplicate. It carries the cart
// id as its subject and partitionkey, so a kstate service downstream (an
// order service, say) can key on it unchanged.
func checkedOutEvent(key string, c Cart, in sdk.Event) (event.Event, error) {
	out := event.New()
	out.SetType(TypeCartCheckedOut)
	out.SetSource(Source)
	out.SetSubject(key)
	out.SetExtension("partitionkey", key)
	if t := in.Time(); !t.IsZero() {
		out.SetTime(t)
	}
	if err := out.SetData(event.ApplicationJSON, c); err != nil {
		return event.Event{}, fmt.Errorf("encoding the %s event of cart %q: %w", TypeCartCheckedOut, key, err)
	}
	return out, nil
}
