package visitors

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/kstate-dev/kstate/pkg/sdk"
)

// Event types the function takes.
const (
	TypeViewed = "com.example.page.Viewed"
	TypeCount  = "com.example.page.Count"
)

// Reply is the reply to every event.
type Reply struct {
	Page           string `json:"page"`
	UniqueVisitors int64  `json:"unique_visitors"`
}

// Handler returns the unique-visitors function.
func Handler() sdk.Handler {
	return sdk.HandlerFunc(func(_ context.Context, req sdk.Request) (sdk.Result, error) {
		out, err := handle(req.Key, req.State, req.Exists, req.Event)
		if err != nil {
			return sdk.Result{}, err
		}
		res := sdk.ReplyJSON(out.reply)
		if out.state != nil {
			res = res.SetState(out.state)
		}
		return res, nil
	})
}

// outcome is what one call does; Handler turns it into an sdk.Result.
type outcome struct {
	reply Reply
	// state is the new state, nil when it is unchanged.
	state []byte
}

func handle(key string, state []byte, exists bool, ev sdk.Event) (outcome, error) {
	switch ev.Type() {
	case TypeViewed, TypeCount, sdk.HTTPType(http.MethodGet), sdk.HTTPType(http.MethodHead):
	default:
		return outcome{}, sdk.Errorf(http.StatusBadRequest, "unsupported event type %q: expected %s, or a read (%s, HTTP GET)",
			ev.Type(), TypeViewed, TypeCount)
	}
	s := &sketch{}
	if exists {
		var err error
		if s, err = unmarshal(state); err != nil {
			return outcome{}, fmt.Errorf("decoding the stored sketch of page %q: %w", key, err)
		}
	}
	if ev.Type() != TypeViewed {
		return outcome{reply: Reply{Page: key, UniqueVisitors: s.estimate()}}, nil
	}
	var in struct {
		Visitor *string `json:"visitor"`
	}
	if err := ev.DecodeJSON(&in); err != nil {
		return outcome{}, err
	}
	if in.Visitor == nil || strings.TrimSpace(*in.Visitor) == "" {
		return outcome{}, sdk.Errorf(http.StatusBadRequest, `data field "visitor" is required and must not be blank`)
	}
	changed, err := s.add(hashVisitor(*in.Visitor))
	if err != nil {
		return outcome{}, fmt.Errorf("adding to the stored sketch of page %q: %w", key, err)
	}
	out := outcome{reply: Reply{Page: key, UniqueVisitors: s.estimate()}}
	if changed {
		out.state = s.marshal()
	}
	return out, nil
}
