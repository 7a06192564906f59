package cart_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstate-dev/kstate/examples/cart"
	"github.com/kstate-dev/kstate/examples/internal/fntest"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

func added(sku string, qty, price int64) fntest.Input {
	return fntest.CE("add-"+sku, cart.TypeItemAdded, fmt.Sprintf(`{"sku":%q,"quantity":%d,"price_cents":%d}`, sku, qty, price))
}

func removed(sku string, qty int64) fntest.Input {
	return fntest.CE("rm-"+sku, cart.TypeItemRemoved, fmt.Sprintf(`{"sku":%q,"quantity":%d}`, sku, qty))
}

func checkedOut() fntest.Input { return fntest.CE("checkout", cart.TypeCheckedOut, "") }

func ok(action, body string) fntest.Reply {
	return fntest.Reply{Action: action, Status: 200, Body: body}
}

func refused(msg string) fntest.Reply {
	return fntest.Reply{Action: "KEEP", Status: 400, Body: `{"error":` + quote(msg) + `}`}
}

// quote is the JSON string for s (the SDK escapes quotes as \").
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

const (
	emptyCart = `{"cart_id":"c1","status":"open","items":[],"item_count":0,"total_cents":0}`
	// apples: 3 at 50 cents.
	apples      = `{"cart_id":"c1","status":"open","items":[{"sku":"apple","quantity":3,"price_cents":50,"subtotal_cents":150}],"item_count":3,"total_cents":150}`
	applesState = `{"items":[{"sku":"apple","quantity":3,"price_cents":50}]}`
)

func TestCart(t *testing.T) {
	tests := []struct {
		name      string
		setup     []fntest.Input // applied first; each must succeed
		in        fntest.Input
		want      fntest.Reply
		wantState string // "" when the entity must not exist
	}{{
		name: "GET of a cart that does not exist is an empty open cart",
		in:   fntest.HTTP("GET", "/"),
		want: ok("KEEP", emptyCart),
	}, {
		name:      "add to a new cart",
		in:        added("apple", 3, 50),
		want:      ok("SET", apples),
		wantState: applesState,
	}, {
		name:      "add the same SKU again adds up and takes the latest price",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        added("apple", 2, 40),
		want:      ok("SET", `{"cart_id":"c1","status":"open","items":[{"sku":"apple","quantity":5,"price_cents":40,"subtotal_cents":200}],"item_count":5,"total_cents":200}`),
		wantState: `{"items":[{"sku":"apple","quantity":5,"price_cents":40}]}`,
	}, {
		name:  "lines keep the order SKUs were first added; totals add up",
		setup: []fntest.Input{added("pear", 1, 120), added("apple", 3, 50)},
		in:    added("pear", 1, 120),
		want: ok("SET", `{"cart_id":"c1","status":"open","items":[`+
			`{"sku":"pear","quantity":2,"price_cents":120,"subtotal_cents":240},`+
			`{"sku":"apple","quantity":3,"price_cents":50,"subtotal_cents":150}],"item_count":5,"total_cents":390}`),
		wantState: `{"items":[{"sku":"pear","quantity":2,"price_cents":120},{"sku":"apple","quantity":3,"price_cents":50}]}`,
	}, {
		name:      "a free item (price 0) is allowed",
		in:        added("sticker", 1, 0),
		want:      ok("SET", `{"cart_id":"c1","status":"open","items":[{"sku":"sticker","quantity":1,"price_cents":0,"subtotal_cents":0}],"item_count":1,"total_cents":0}`),
		wantState: `{"items":[{"sku":"sticker","quantity":1,"price_cents":0}]}`,
	}, {
		name:      "remove some",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        removed("apple", 1),
		want:      ok("SET", `{"cart_id":"c1","status":"open","items":[{"sku":"apple","quantity":2,"price_cents":50,"subtotal_cents":100}],"item_count":2,"total_cents":100}`),
		wantState: `{"items":[{"sku":"apple","quantity":2,"price_cents":50}]}`,
	}, {
		name:      "removing all of a SKU removes its line",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        removed("apple", 3),
		want:      ok("SET", emptyCart),
		wantState: `{"items":[]}`,
	}, {
		name:      "removing more than the cart holds is refused, not clamped",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        removed("apple", 4),
		want:      refused(`data field "quantity": cannot remove 4 of sku "apple", the cart holds 3`),
		wantState: applesState,
	}, {
		name:      "removing a SKU that is not in the cart",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        removed("pear", 1),
		want:      refused(`data field "sku": "pear" is not in the cart`),
		wantState: applesState,
	}, {
		name: "missing sku",
		in:   fntest.CE("e", cart.TypeItemAdded, `{"quantity":1,"price_cents":5}`),
		want: refused(`data field "sku" is required and must not be blank`),
	}, {
		name: "blank sku",
		in:   fntest.CE("e", cart.TypeItemRemoved, `{"sku":"  ","quantity":1}`),
		want: refused(`data field "sku" is required and must not be blank`),
	}, {
		name: "sku too long",
		in:   added(strings.Repeat("x", cart.MaxSKULen+1), 1, 5),
		want: refused(`data field "sku" must be at most 128 bytes, got 129`),
	}, {
		name: "missing quantity",
		in:   fntest.CE("e", cart.TypeItemAdded, `{"sku":"apple","price_cents":5}`),
		want: refused(`data field "quantity" is required`),
	}, {
		name:      "quantity 0",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        added("apple", 0, 50),
		want:      refused(`data field "quantity" must be a positive integer, got 0`),
		wantState: applesState,
	}, {
		name:      "negative quantity on remove",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        removed("apple", -2),
		want:      refused(`data field "quantity" must be a positive integer, got -2`),
		wantState: applesState,
	}, {
		name: "quantity of the wrong type",
		in:   fntest.CE("e", cart.TypeItemAdded, `{"sku":"apple","quantity":"2","price_cents":5}`),
		want: refused(`data field "quantity" must be an integer, got string`),
	}, {
		name: "missing price",
		in:   fntest.CE("e", cart.TypeItemAdded, `{"sku":"apple","quantity":1}`),
		want: refused(`data field "price_cents" is required`),
	}, {
		name: "negative price",
		in:   added("apple", 1, -1),
		want: refused(`data field "price_cents" must be 0 or more, got -1`),
	}, {
		name: "price above the limit",
		in:   added("apple", 1, cart.MaxPriceCents+1),
		want: refused(`data field "price_cents" must be at most 100000000, got 100000001`),
	}, {
		name:      "quantity above the per-SKU limit",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        added("apple", cart.MaxQuantity-2, 50),
		want:      refused(`data field "quantity": adding 999998 to the 3 of sku "apple" in the cart exceeds the limit of 1000000 per SKU`),
		wantState: applesState,
	}, {
		name: "data is not JSON",
		in:   fntest.CE("e", cart.TypeItemAdded, `{"sku":`),
		want: refused(`data is not valid JSON: unexpected end of JSON input`),
	}, {
		name:      "unknown event type",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        fntest.CE("e", "com.example.cart.ItemAddded", `{}`),
		want:      refused(`unsupported event type "com.example.cart.ItemAddded": expected com.example.cart.ItemAdded, com.example.cart.ItemRemoved, com.example.cart.CheckedOut, or a read (com.example.cart.Get, HTTP GET)`),
		wantState: applesState,
	}, {
		name:      "plain HTTP POST is not an event the cart knows",
		in:        fntest.Input{Event: fntest.Event("p", "kstate.http.post", `{"sku":"apple"}`), HTTP: &functionv1.HttpRequest{Method: "POST", Path: "/"}},
		want:      refused(`unsupported event type "kstate.http.post": expected com.example.cart.ItemAdded, com.example.cart.ItemRemoved, com.example.cart.CheckedOut, or a read (com.example.cart.Get, HTTP GET)`),
		wantState: "",
	}, {
		name:      "checking out an empty cart is refused",
		setup:     []fntest.Input{added("apple", 3, 50), removed("apple", 3)},
		in:        checkedOut(),
		want:      refused(`cannot check out cart "c1": it is empty`),
		wantState: `{"items":[]}`,
	}, {
		name: "checking out a cart that never existed is refused",
		in:   checkedOut(),
		want: refused(`cannot check out cart "c1": it is empty`),
	}, {
		name:      "checkout marks the cart checked out",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        checkedOut(),
		want:      ok("SET", strings.Replace(apples, `"open"`, `"checked_out"`, 1)),
		wantState: `{"items":[{"sku":"apple","quantity":3,"price_cents":50}],"checked_out":true}`,
	}, {
		name:      "a checked-out cart refuses additions",
		setup:     []fntest.Input{added("apple", 3, 50), checkedOut()},
		in:        added("pear", 1, 120),
		want:      refused(`cart "c1" is checked out: it takes no more changes`),
		wantState: `{"items":[{"sku":"apple","quantity":3,"price_cents":50}],"checked_out":true}`,
	}, {
		name:      "a checked-out cart refuses removals",
		setup:     []fntest.Input{added("apple", 3, 50), checkedOut()},
		in:        removed("apple", 1),
		want:      refused(`cart "c1" is checked out: it takes no more changes`),
		wantState: `{"items":[{"sku":"apple","quantity":3,"price_cents":50}],"checked_out":true}`,
	}, {
		name:      "a second checkout is refused and emits nothing",
		setup:     []fntest.Input{added("apple", 3, 50), checkedOut()},
		in:        fntest.CE("checkout-2", cart.TypeCheckedOut, ""),
		want:      refused(`cart "c1" is checked out: it takes no more changes`),
		wantState: `{"items":[{"sku":"apple","quantity":3,"price_cents":50}],"checked_out":true}`,
	}, {
		name:      "a checked-out cart can still be read, by GET",
		setup:     []fntest.Input{added("apple", 3, 50), checkedOut()},
		in:        fntest.HTTP("GET", "/"),
		want:      ok("KEEP", strings.Replace(apples, `"open"`, `"checked_out"`, 1)),
		wantState: `{"items":[{"sku":"apple","quantity":3,"price_cents":50}],"checked_out":true}`,
	}, {
		name:      "HEAD reads",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        fntest.HTTP("HEAD", "/"),
		want:      ok("KEEP", apples),
		wantState: applesState,
	}, {
		name:      "a Get CloudEvent reads, whatever its data",
		setup:     []fntest.Input{added("apple", 3, 50)},
		in:        fntest.CE("g", cart.TypeGet, `{"sku":"pear","quantity":1,"price_cents":1}`),
		want:      ok("KEEP", apples),
		wantState: applesState,
	}}
	c := fntest.Serve(t, cart.Handler())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := fntest.NewAgent(c)
			for i, in := range tc.setup {
				if r := fntest.ReplyOf(a.Send(t, "c1", in)); r.Status != 200 {
					t.Fatalf("setup step %d (%s): %+v", i, in.Event.GetType(), r)
				}
			}
			resp := a.Send(t, "c1", tc.in)
			if diff := cmp.Diff(tc.want, fntest.ReplyOf(resp)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if len(resp.GetEmit()) > 0 && tc.in.Event.GetType() != cart.TypeCheckedOut {
				t.Errorf("emitted %d events, want none", len(resp.GetEmit()))
			}
			state, exists := a.State("c1")
			if got := string(state); got != tc.wantState || exists != (tc.wantState != "") {
				t.Errorf("state = %q (exists %v), want %q", got, exists, tc.wantState)
			}
		})
	}
}

// TestCheckoutEmits checks the event a checkout emits, and that refused
// checkouts emit nothing.
func TestCheckoutEmits(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	checkout := fntest.CE("order-7", cart.TypeCheckedOut, "")
	checkout.Event.Time = timestamppb.New(at)
	noTime := fntest.CE("order-8", cart.TypeCheckedOut, "")

	wantData := `{"cart_id":"c1","status":"checked_out","items":[` +
		`{"sku":"apple","quantity":3,"price_cents":50,"subtotal_cents":150},` +
		`{"sku":"pear","quantity":1,"price_cents":120,"subtotal_cents":120}],"item_count":4,"total_cents":270}`
	emitted := func(tm *timestamppb.Timestamp) []*functionv1.CloudEvent {
		return []*functionv1.CloudEvent{{
			Source: cart.Source, SpecVersion: "1.0", Type: cart.TypeCartCheckedOut, Subject: "c1",
			DataContentType: "application/json", Time: tm,
			Extensions: map[string]string{"partitionkey": "c1"},
			Data:       []byte(wantData),
		}}
	}
	tests := []struct {
		name  string
		setup []fntest.Input
		in    fntest.Input
		want  []*functionv1.CloudEvent
	}{{
		name:  "the emitted event carries the cart and the checkout's time",
		setup: []fntest.Input{added("apple", 3, 50), added("pear", 1, 120)},
		in:    checkout,
		want:  emitted(timestamppb.New(at)),
	}, {
		name:  "a checkout without a time emits an event without one",
		setup: []fntest.Input{added("apple", 3, 50), added("pear", 1, 120)},
		in:    noTime,
		want:  emitted(nil),
	}, {
		name: "an empty cart emits nothing",
		in:   checkout,
	}, {
		name:  "a second checkout emits nothing",
		setup: []fntest.Input{added("apple", 3, 50), checkedOut()},
		in:    checkout,
	}}
	c := fntest.Serve(t, cart.Handler())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := fntest.NewAgent(c)
			for i, in := range tc.setup {
				if r := fntest.ReplyOf(a.Send(t, "c1", in)); r.Status != 200 {
					t.Fatalf("setup step %d: %+v", i, r)
				}
			}
			got := a.Send(t, "c1", tc.in).GetEmit()
			for _, e := range got {
				if e.GetId() == "" {
					t.Errorf("emitted event has no id: the SDK should derive one")
				}
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), protocmp.IgnoreFields(&functionv1.CloudEvent{}, "id")); diff != "" {
				t.Errorf("emitted events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckoutEmitIDIsStable checks that running the same checkout again on
// the same state (what happens when a pod dies before its update was
// written) emits the same event id, so receivers can deduplicate.
func TestCheckoutEmitIDIsStable(t *testing.T) {
	c := fntest.Serve(t, cart.Handler())
	ids := map[string]bool{}
	for range 2 {
		a := fntest.NewAgent(c)
		a.Send(t, "c1", added("apple", 3, 50))
		emit := a.Send(t, "c1", checkedOut()).GetEmit()
		if len(emit) != 1 {
			t.Fatalf("checkout emitted %d events, want 1", len(emit))
		}
		ids[emit[0].GetId()] = true
	}
	if len(ids) != 1 {
		t.Errorf("two runs of one checkout emitted ids %v, want one id", ids)
	}
}

// TestCartsAreSeparate plays several carts through one function.
func TestCartsAreSeparate(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, cart.Handler()))
	a.Send(t, "c1", added("apple", 3, 50))
	a.Send(t, "c2", added("pear", 1, 120))
	a.Send(t, "c1", checkedOut())
	got := map[string]string{}
	for _, key := range []string{"c1", "c2"} {
		got[key] = fntest.ReplyOf(a.Send(t, key, fntest.HTTP("GET", "/"))).Body
	}
	want := map[string]string{
		"c1": strings.Replace(apples, `"open"`, `"checked_out"`, 1),
		"c2": `{"cart_id":"c2","status":"open","items":[{"sku":"pear","quantity":1,"price_cents":120,"subtotal_cents":120}],"item_count":1,"total_cents":120}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("carts (-want +got):\n%s", diff)
	}
}
