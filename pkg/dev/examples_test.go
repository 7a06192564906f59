package dev

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/examples/cart"
	"github.com/kstate-dev/kstate/examples/counter"
	"github.com/kstate-dev/kstate/examples/join"
	"github.com/kstate-dev/kstate/examples/visitors"
	"github.com/kstate-dev/kstate/internal/redistest"
)

var eventID atomic.Int64

type ce struct{ typ, key, data string }

// sendEvent posts a binary-mode CloudEvent and returns the reply body.
func sendEvent(t *testing.T, addr string, e ce) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(e.data))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", fmt.Sprintf("ev-%d", eventID.Add(1)))
	req.Header.Set("Ce-Source", "/dev-test")
	req.Header.Set("Ce-Type", e.typ)
	req.Header.Set("Ce-Partitionkey", e.key)
	if e.data != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s for %s: %d %s", e.typ, e.key, resp.StatusCode, body)
	}
	return strings.TrimSpace(string(body))
}

// Every example keeps its state, and serves its first reads from memory,
// across a scale-up and a scale to zero and back, in dev with several
// replicas on a real redis-server.
func TestExamplesAcrossScaleEvents(t *testing.T) {
	readings := []ce{}
	for i, s := range []string{"temp", "humidity", "temp", "humidity"} {
		readings = append(readings, ce{join.TypeReading, "device-1", fmt.Sprintf(`{"sensor": %q, "value": %d, "ts": "2024-05-01T12:00:%02dZ"}`, s, 20+i, i)})
	}
	var views []ce
	for i := 0; i < 200; i++ {
		views = append(views, ce{visitors.TypeViewed, fmt.Sprintf("page-%d", i%4), fmt.Sprintf(`{"visitor": "v%d"}`, i%50)})
	}
	tests := []struct {
		example string
		writes  []ce
		reads   []ce
	}{{
		example: "counter",
		writes:  []ce{{"counter.add", "a", `{"by": 2}`}, {"counter.add", "b", `{"by": 3}`}, {"counter.add", "a", ``}},
		reads:   []ce{{counter.TypeGet, "a", ""}, {counter.TypeGet, "b", ""}},
	}, {
		example: "cart",
		writes: []ce{
			{cart.TypeItemAdded, "cart-1", `{"sku": "apple", "quantity": 3, "price_cents": 50}`},
			{cart.TypeItemAdded, "cart-2", `{"sku": "pear", "quantity": 1, "price_cents": 80}`},
			{cart.TypeItemRemoved, "cart-1", `{"sku": "apple", "quantity": 1}`},
		},
		reads: []ce{{cart.TypeGet, "cart-1", ""}, {cart.TypeGet, "cart-2", ""}},
	}, {
		example: "visitors",
		writes:  views,
		reads:   []ce{{visitors.TypeCount, "page-0", ""}, {visitors.TypeCount, "page-3", ""}},
	}, {
		example: "join",
		writes:  readings,
		reads:   []ce{{join.TypeStatus, "device-1", ""}},
	}}
	for _, tt := range tests {
		t.Run(tt.example, func(t *testing.T) {
			redis := redistest.Start(t)
			addr, stop := startDev(t, Options{Example: tt.example, Addr: freeAddr(t), Redis: redis.URL(), Replicas: 2, Slots: 64,
				FlushInterval: 20 * time.Millisecond, ScaleToZeroAfter: time.Second})
			defer stop()
			for _, w := range tt.writes {
				sendEvent(t, addr, w)
			}
			want := make([]string, len(tt.reads))
			for i, r := range tt.reads {
				want[i] = sendEvent(t, addr, r)
			}
			check := func(when string) {
				t.Helper()
				before := devStatus(t, addr)
				for i, r := range tt.reads {
					if got := sendEvent(t, addr, r); got != want[i] {
						t.Errorf("%s: %s %s = %s, want %s", when, r.typ, r.key, got, want[i])
					}
				}
				if misses := devStatus(t, addr).CacheMisses - before.CacheMisses; misses != 0 {
					t.Errorf("%s: %d of %d first reads missed the cache", when, misses, len(tt.reads))
				}
			}
			waitClean := func() {
				deadline := time.Now().Add(20 * time.Second)
				for devStatus(t, addr).Dirty != 0 {
					if time.Now().After(deadline) {
						t.Fatal("not flushed within 20s")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			waitClean()
			scaleTo(t, addr, 3)
			check("after scaling to 3")
			deadline := time.Now().Add(20 * time.Second)
			for len(devStatus(t, addr).Replicas) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("no scale to zero within 20s of idling")
				}
				time.Sleep(20 * time.Millisecond)
			}
			check("after scale to zero and back")
		})
	}
}
