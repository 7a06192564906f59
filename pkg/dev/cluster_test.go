package dev

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/internal/redistest"
)

type countReply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// add sends one increment and returns the serving replica and the reply.
func add(client *http.Client, addr, key string) (string, countReply, error) {
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(`{"by":1}`))
	req.Header.Set("Kstate-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", countReply{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", countReply{}, fmt.Errorf("%s: %d %s", key, resp.StatusCode, body)
	}
	var r countReply
	err = json.Unmarshal(body, &r)
	return resp.Header.Get("Kstate-Pod"), r, err
}

func devStatus(t *testing.T, addr string) Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func scaleTo(t *testing.T, addr string, n int) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s%s?replicas=%d", addr, ScalePath, n), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scale to %d: %d %s", n, resp.StatusCode, body)
	}
}

// With three replicas every key is always served by the same one, and the
// keys spread over all of them.
func TestDevKeyAffinity(t *testing.T) {
	addr, stop := startDev(t, Options{Example: "counter", Addr: freeAddr(t), Replicas: 3, Slots: 64})
	defer stop()
	owner := map[string]string{}
	used := map[string]bool{}
	for i := 0; i < 300; i++ {
		key := fmt.Sprintf("key-%d", i%30)
		pod, r, err := add(http.DefaultClient, addr, key)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := owner[key]; ok && prev != pod {
			t.Fatalf("%s served by %s and then by %s", key, prev, pod)
		}
		owner[key], used[pod] = pod, true
		if want := int64(i/30 + 1); r.Count != want {
			t.Fatalf("%s: count %d, want %d", key, r.Count, want)
		}
	}
	if len(used) != 3 {
		t.Errorf("30 keys used replicas %v; want all 3", used)
	}
}

// Scaling up and down under load: no request fails, and every acknowledged
// increment counts exactly once.
func TestDevScaleUnderLoad(t *testing.T) {
	redis := redistest.Start(t)
	addr, stop := startDev(t, Options{Example: "counter", Addr: freeAddr(t), Redis: redis.URL(), Replicas: 2, Slots: 64})
	var (
		acked  sync.Map // key -> *atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
		done   = make(chan struct{})
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{}
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				key := fmt.Sprintf("k%d", (w*7+i)%40)
				if _, _, err := add(client, addr, key); err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				n, _ := acked.LoadOrStore(key, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}(w)
	}
	loaded := func(n int64) {
		deadline := time.Now().Add(20 * time.Second)
		for devStatus(t, addr).Requests < n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d requests served within 20s", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	loaded(100)
	scaleTo(t, addr, 4)
	loaded(devStatus(t, addr).Requests + 100)
	scaleTo(t, addr, 1)
	loaded(devStatus(t, addr).Requests + 100)
	scaleTo(t, addr, 3)
	loaded(devStatus(t, addr).Requests + 100)
	close(done)
	wg.Wait()
	if st := devStatus(t, addr); st.Handoffs == 0 {
		t.Errorf("no slot was handed off while scaling: %+v", st)
	}
	if failed.Load() != 0 {
		t.Errorf("%d requests failed while scaling", failed.Load())
	}
	if out, err := stop(); err != nil {
		t.Fatalf("dev: %v\n%s", err, out)
	}
	// A fresh single replica on the same Redis reads what was written.
	addr, stop = startDev(t, Options{Example: "counter", Addr: freeAddr(t), Redis: redis.URL(), Replicas: 1, Slots: 64})
	defer stop()
	acked.Range(func(k, v any) bool {
		_, r, err := add(http.DefaultClient, addr, k.(string))
		if err != nil {
			t.Fatal(err)
		}
		if want := v.(*atomic.Int64).Load() + 1; r.Count != want {
			t.Errorf("%s: count %d after %d acknowledged increments, want %d", k, r.Count, want-1, want)
		}
		return true
	})
}

// Idle dev scales to zero, flushing everything; the next request scales it
// back from zero, and the hot key it touches was preloaded (a cache hit).
func TestDevScaleToZeroAndBack(t *testing.T) {
	addr, stop := startDev(t, Options{Example: "counter", Addr: freeAddr(t), Replicas: 1, Slots: 64, ScaleToZeroAfter: 300 * time.Millisecond})
	defer stop()
	for i := 0; i < 5; i++ {
		if _, _, err := add(http.DefaultClient, addr, "hot"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(devStatus(t, addr).Replicas) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("dev did not scale to zero within 20s of idling")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := devStatus(t, addr)
	_, r, err := add(http.DefaultClient, addr, "hot")
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 6 {
		t.Fatalf("count after scale from zero: %d, want 6", r.Count)
	}
	after := devStatus(t, addr)
	if len(after.Replicas) != 1 || after.CacheMisses != before.CacheMisses || after.CacheHits != before.CacheHits+1 {
		t.Errorf("after scale from zero: replicas %v, misses %d→%d, hits %d→%d; want 1 replica and a preloaded hit",
			after.Replicas, before.CacheMisses, after.CacheMisses, before.CacheHits, after.CacheHits)
	}
}

// Keys that move on scale-up and scale-down were preloaded by the replica
// they move to: every first request after a scale event is a cache hit.
func TestDevScalePreloadsMovedKeys(t *testing.T) {
	addr, stop := startDev(t, Options{Example: "counter", Addr: freeAddr(t), Replicas: 2, Slots: 64, FlushInterval: 20 * time.Millisecond})
	defer stop()
	const keys = 60
	touchAll := func() {
		for i := 0; i < keys; i++ {
			if _, _, err := add(http.DefaultClient, addr, fmt.Sprintf("k%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	flushed := func() {
		deadline := time.Now().Add(20 * time.Second)
		for devStatus(t, addr).Dirty != 0 {
			if time.Now().After(deadline) {
				t.Fatal("dirty entities not flushed within 20s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	touchAll() // every key is new: 60 misses
	flushed()
	for _, n := range []int{3, 1, 4} {
		scaleTo(t, addr, n)
		before := devStatus(t, addr)
		touchAll()
		after := devStatus(t, addr)
		if misses := after.CacheMisses - before.CacheMisses; misses != 0 {
			t.Errorf("after scaling to %d: %d of %d first requests missed the cache", n, misses, keys)
		}
		flushed()
	}
}
