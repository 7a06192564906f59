package counter

import (
	"context"
	"math"
	"net/http"

	"github.com/kstate-dev/kstate/pkg/sdk"
)

// TypeGet is the CloudEvent type that reads a count without changing it.
const TypeGet = "counter.get"

// State is what is stored per key.
type State struct {
	Count int64 `json:"count"`
}

// Reply is the JSON reply to every event.
type Reply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// Handler returns the counter function.
func Handler() sdk.Handler { return sdk.JSON(handle) }

func handle(_ context.Context, key string, s *State, ev sdk.Event) (sdk.Result, error) {
	switch ev.Type() {
	case TypeGet, sdk.HTTPType(http.MethodGet), sdk.HTTPType(http.MethodHead):
		return sdk.ReplyJSON(Reply{Key: key, Count: s.Count}), nil
	}
	in := struct {
		By int64 `json:"by"`
	}{By: 1}
	if err := ev.DecodeJSON(&in); err != nil {
		return sdk.Result{}, err
	}
	if (in.By > 0 && s.Count > math.MaxInt64-in.By) || (in.By < 0 && s.Count < math.MinInt64-in.By) {
		return sdk.Result{}, sdk.Errorf(http.StatusBadRequest, "data field \"by\": adding %d to %d overflows the count", in.By, s.Count)
	}
	s.Count += in.By
	return sdk.ReplyJSON(Reply{Key: key, Count: s.Count}).Save(), nil
}
