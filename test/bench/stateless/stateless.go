// Package stateless is the baseline the benchmarks compare kstate's warm
// counter with (issue 7, P2 and P5): a counter function with no state in
// memory that does a Redis GET and SET per request and answers like the
// counter example ({"key":..., "count":...} for a POST with a Kstate-Key
// header and an optional {"by": n} body). It is benchmark infrastructure,
// not part of kstate: the dev benchmarks serve it in the test process
// (test/bench), the cluster benchmarks as a Knative Service
// (cmd/stateless-counter, test/e2e).
//
// GET then SET is the baseline the issue names, and it loses updates under
// concurrency on one key; the benchmarks report that, they do not rely on it.
package stateless

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix is prepended to the entity key to make the Redis key.
const KeyPrefix = "stateless:"

// Reply is the handler's answer, the counter example's shape.
type Reply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// Handler serves the counter on rdb.
func Handler(rdb *redis.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Kstate-Key")
		in := struct {
			By int64 `json:"by"`
		}{By: 1}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil && err != io.EOF {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n, err := rdb.Get(r.Context(), KeyPrefix+key).Int64()
		if err != nil && err != redis.Nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n += in.By
		if err := rdb.Set(r.Context(), KeyPrefix+key, n, 0).Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Reply{Key: key, Count: n})
	})
}
