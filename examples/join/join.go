package join

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kstate-dev/kstate/pkg/sdk"
)

// Event types the function takes and emits.
const (
	TypeReading = "com.example.sensor.Reading"
	TypeStatus  = "com.example.sensor.Status"
	// TypeJoined is emitted once per pair, with the Pair as data.
	TypeJoined = "com.example.sensor.Joined"
	// Source is the source of the emitted events.
	Source = "/kstate/examples/join"
)

// Sensor names.
const (
	Temp     = "temp"
	Humidity = "humidity"
)

// The join's parameters.
const (
	// Window is how far apart two readings may be to join.
	Window = 5 * time.Second
	// AllowedLateness is how much older than the newest reading seen a
	// reading may be and still be processed.
	AllowedLateness = 30 * time.Second
	// MaxBuffered bounds the readings remembered per sensor.
	MaxBuffered = 64
)

// Outcomes of a reading.
const (
	OutcomeJoined    = "joined"
	OutcomeBuffered  = "buffered"
	OutcomeLate      = "late"
	OutcomeDuplicate = "duplicate"
)

// State is what is stored per device.
type State struct {
	// Newest is the newest timestamp of a processed reading.
	Newest time.Time `json:"newest,omitzero"`
	// Temp and Humidity are the remembered readings of each sensor,
	// oldest first.
	Temp     []Reading `json:"temp,omitempty"`
	Humidity []Reading `json:"humidity,omitempty"`
	Stats    Stats     `json:"stats"`
}

// Reading is a remembered reading.
type Reading struct {
	Value float64   `json:"value"`
	TS    time.Time `json:"ts"`
	// Joined readings are kept only to recognize duplicates.
	Joined bool `json:"joined,omitempty"`
}

// Stats counts what happened to the device's readings.
type Stats struct {
	Joined     int64 `json:"joined"`     // pairs made
	Expired    int64 `json:"expired"`    // unjoined readings dropped past the window and lateness
	Overflowed int64 `json:"overflowed"` // unjoined readings dropped because the buffer was full
	Late       int64 `json:"late"`       // readings refused as too late
	Duplicates int64 `json:"duplicates"` // readings refused as duplicates
}

// Value is one sensor's side of a pair, or a buffered reading.
type Value struct {
	Value float64   `json:"value"`
	TS    time.Time `json:"ts"`
}

// Pair is a joined pair: the reply lists it and the Joined event carries it.
type Pair struct {
	Device   string `json:"device"`
	Temp     Value  `json:"temp"`
	Humidity Value  `json:"humidity"`
	// SkewMS is how far apart the two readings are, in milliseconds.
	SkewMS int64 `json:"skew_ms"`
}

// Reply is the reply to a reading.
type Reply struct {
	Device  string `json:"device"`
	Outcome string `json:"outcome"`
	Joined  []Pair `json:"joined"`
	// Expired and Overflowed count the unjoined readings this event
	// dropped.
	Expired    int       `json:"expired"`
	Overflowed int       `json:"overflowed"`
	Newest     time.Time `json:"newest,omitzero"`
}

// Status is the reply to a read.
type Status struct {
	Device   string    `json:"device"`
	Newest   time.Time `json:"newest,omitzero"`
	Buffered Buffered  `json:"buffered"`
	Stats    Stats     `json:"stats"`
}

// Buffered lists the readings waiting for a partner, oldest first.
type Buffered struct {
	Temp     []Value `json:"temp"`
	Humidity []Value `json:"humidity"`
}

// Handler returns the join function.
func Handler() sdk.Handler { return sdk.JSON(handle) }

func handle(_ context.Context, key string, s *State, ev sdk.Event) (sdk.Result, error) {
	switch ev.Type() {
	case TypeStatus, sdk.HTTPType(http.MethodGet), sdk.HTTPType(http.MethodHead):
		return sdk.ReplyJSON(status(key, s)), nil
	case TypeReading:
	default:
		return sdk.Result{}, sdk.Errorf(http.StatusBadRequest, "unsupported event type %q: expected %s, or a read (%s, HTTP GET)",
			ev.Type(), TypeReading, TypeStatus)
	}
	sensor, r, err := decode(ev)
	if err != nil {
		return sdk.Result{}, err
	}
	reply := apply(key, s, sensor, r)
	res := sdk.ReplyJSON(reply).Save()
	for _, p := range reply.Joined {
		out, err := joinedEvent(p)
		if err != nil {
			return sdk.Result{}, err
		}
		res = res.Emit(out)
	}
	return res, nil
}

const tsExample = "an RFC 3339 time such as 2024-05-01T12:00:00Z"

func decode(ev sdk.Event) (string, Reading, error) {
	var in struct {
		Sensor *string  `json:"sensor"`
		Value  *float64 `json:"value"`
		TS     *string  `json:"ts"`
	}
	if err := ev.DecodeJSON(&in); err != nil {
		return "", Reading{}, err
	}
	switch {
	case in.Sensor == nil:
		return "", Reading{}, sdk.Errorf(http.StatusBadRequest, `data field "sensor" is required: %q or %q`, Temp, Humidity)
	case *in.Sensor != Temp && *in.Sensor != Humidity:
		return "", Reading{}, sdk.Errorf(http.StatusBadRequest, `data field "sensor" must be %q or %q, got %q`, Temp, Humidity, *in.Sensor)
	case in.Value == nil:
		return "", Reading{}, sdk.Errorf(http.StatusBadRequest, `data field "value" is required: a number`)
	case in.TS == nil:
		return "", Reading{}, sdk.Errorf(http.StatusBadRequest, `data field "ts" is required: %s`, tsExample)
	}
	ts, err := time.Parse(time.RFC3339Nano, *in.TS)
	if err != nil {
		return "", Reading{}, sdk.Errorf(http.StatusBadRequest, `data field "ts" must be %s, got %q`, tsExample, *in.TS)
	}
	return *in.Sensor, Reading{Value: *in.Value, TS: ts.UTC()}, nil
}

// apply runs the rules of the package documentation for one reading, in
// this order: late, duplicate, newest, expiry, join, bound.
func apply(key string, s *State, sensor string, r Reading) Reply {
	reply := Reply{Device: key, Joined: []Pair{}}
	own, other := &s.Temp, &s.Humidity
	if sensor == Humidity {
		own, other = other, own
	}
	switch {
	case !s.Newest.IsZero() && r.TS.Before(s.Newest.Add(-AllowedLateness)):
		s.Stats.Late++
		reply.Outcome = OutcomeLate
	case slices.ContainsFunc(*own, func(b Reading) bool { return b.TS.Equal(r.TS) }):
		s.Stats.Duplicates++
		reply.Outcome = OutcomeDuplicate
	default:
		if r.TS.After(s.Newest) {
			s.Newest = r.TS
		}
		reply.Expired = s.expire()
		if i := closest(*other, r.TS); i >= 0 {
			b := &(*other)[i]
			b.Joined, r.Joined = true, true
			reply.Joined = append(reply.Joined, pair(key, sensor, r, *b))
			s.Stats.Joined++
			reply.Outcome = OutcomeJoined
		} else {
			reply.Outcome = OutcomeBuffered
		}
		i := insert(own, r)
		if len(*own) > MaxBuffered {
			// Drop the oldest reading other than this one.
			drop := 0
			if i == 0 {
				drop = 1
			}
			if !(*own)[drop].Joined {
				reply.Overflowed++
				s.Stats.Overflowed++
			}
			*own = slices.Delete(*own, drop, drop+1)
		}
	}
	reply.Newest = s.Newest
	return reply
}

// expire drops the readings no acceptable reading can need any more, and
// returns how many of them had not joined.
func (s *State) expire() int {
	unjoinedBefore := s.Newest.Add(-AllowedLateness - Window) // could still join an acceptable reading
	joinedBefore := s.Newest.Add(-AllowedLateness)            // a copy would be late
	expired := 0
	for _, buf := range []*[]Reading{&s.Temp, &s.Humidity} {
		*buf = slices.DeleteFunc(*buf, func(b Reading) bool {
			if b.Joined {
				return b.TS.Before(joinedBefore)
			}
			if b.TS.Before(unjoinedBefore) {
				expired++
				return true
			}
			return false
		})
	}
	s.Stats.Expired += int64(expired)
	return expired
}

// closest returns the index of the unjoined reading in buf closest to ts and
// at most Window from it (the older one on a tie), or -1.
func closest(buf []Reading, ts time.Time) int {
	best, bestGap := -1, time.Duration(0)
	for i, b := range buf {
		gap := b.TS.Sub(ts).Abs()
		// buf is oldest first, so a strict < keeps the older one on a tie.
		if !b.Joined && gap <= Window && (best < 0 || gap < bestGap) {
			best, bestGap = i, gap
		}
	}
	return best
}

// insert puts r into buf, keeping it oldest first, and returns its index.
func insert(buf *[]Reading, r Reading) int {
	i, _ := slices.BinarySearchFunc(*buf, r.TS, func(b Reading, ts time.Time) int { return b.TS.Compare(ts) })
	*buf = slices.Insert(*buf, i, r)
	return i
}

func pair(key, sensor string, r, partner Reading) Pair {
	t, h := r, partner
	if sensor == Humidity {
		t, h = h, t
	}
	return Pair{
		Device:   key,
		Temp:     Value{Value: t.Value, TS: t.TS},
		Humidity: Value{Value: h.Value, TS: h.TS},
		SkewMS:   t.TS.Sub(h.TS).Abs().Milliseconds(),
	}
}

func status(key string, s *State) Status {
	st := Status{Device: key, Newest: s.Newest, Stats: s.Stats, Buffered: Buffered{Temp: []Value{}, Humidity: []Value{}}}
	for _, b := range s.Temp {
		if !b.Joined {
			st.Buffered.Temp = append(st.Buffered.Temp, Value{Value: b.Value, TS: b.TS})
		}
	}
	for _, b := range s.Humidity {
		if !b.Joined {
			st.Buffered.Humidity = append(st.Buffered.Humidity, Value{Value: b.Value, TS: b.TS})
		}
	}
	return st
}

// joinedEvent is the event a pair emits. Its ID is left empty: the SDK
// derives it from the input event (and the emit's position), so a reading
// processed again after a crash emits the same ID. Its time is the later of
// the two readings; subject and partitionkey are the device.
func joinedEvent(p Pair) (event.Event, error) {
	out := event.New()
	out.SetType(TypeJoined)
	out.SetSource(Source)
	out.SetSubject(p.Device)
	out.SetExtension("partitionkey", p.Device)
	out.SetTime(p.Temp.TS)
	if p.Humidity.TS.After(p.Temp.TS) {
		out.SetTime(p.Humidity.TS)
	}
	if err := out.SetData(event.ApplicationJSON, p); err != nil {
		return event.Event{}, fmt.Errorf("encoding the %s event of device %q: %w", TypeJoined, p.Device, err)
	}
	return out, nil
}
