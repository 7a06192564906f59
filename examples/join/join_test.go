package join_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstate-dev/kstate/examples/internal/fntest"
	"github.com/kstate-dev/kstate/examples/join"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

const day = "2024-05-01T"

// at is a time of day on the test's day, e.g. at("12:00:03.5").
func at(clock string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, day+clock+"Z")
	if err != nil {
		panic(err)
	}
	return t
}

// rd is a reading taken at a time of day.
func rd(sensor string, value float64, clock string) fntest.Input {
	return rdTS(sensor, value, day+clock+"Z")
}

// rdTS is a reading with the ts written as given.
func rdTS(sensor string, value float64, ts string) fntest.Input {
	return fntest.CE(fmt.Sprintf("%s@%s", sensor, ts), join.TypeReading,
		fmt.Sprintf(`{"sensor":%q,"value":%v,"ts":%q}`, sensor, value, ts))
}

func v(value float64, clock string) join.Value { return join.Value{Value: value, TS: at(clock)} }

func pair(temp, hum join.Value) join.Pair {
	return join.Pair{Device: "d1", Temp: temp, Humidity: hum, SkewMS: temp.TS.Sub(hum.TS).Abs().Milliseconds()}
}

func reply(outcome, newest string, pairs ...join.Pair) join.Reply {
	return join.Reply{Device: "d1", Outcome: outcome, Joined: append([]join.Pair{}, pairs...), Newest: at(newest)}
}

func buffered(temp, hum []join.Value) join.Buffered {
	if temp == nil {
		temp = []join.Value{}
	}
	if hum == nil {
		hum = []join.Value{}
	}
	return join.Buffered{Temp: temp, Humidity: hum}
}

// tempsEvery returns n temperature readings from 12:00:00, step apart.
func tempsEvery(n int, step time.Duration) []fntest.Input {
	var out []fntest.Input
	for i := range n {
		out = append(out, rdTS(join.Temp, float64(i), at("12:00:00").Add(time.Duration(i)*step).Format(time.RFC3339Nano)))
	}
	return out
}

func TestJoin(t *testing.T) {
	tests := []struct {
		name         string
		setup        []fntest.Input
		in           fntest.Input
		want         join.Reply
		wantBuffered join.Buffered
		wantStats    join.Stats
	}{{
		name:         "a first reading waits",
		in:           rd(join.Temp, 21.5, "12:00:00"),
		want:         reply(join.OutcomeBuffered, "12:00:00"),
		wantBuffered: buffered([]join.Value{v(21.5, "12:00:00")}, nil),
	}, {
		name:         "a reading of the same sensor does not join",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rd(join.Temp, 21.7, "12:00:01"),
		want:         reply(join.OutcomeBuffered, "12:00:01"),
		wantBuffered: buffered([]join.Value{v(21.5, "12:00:00"), v(21.7, "12:00:01")}, nil),
	}, {
		name:         "temp then humidity 3s later join",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rd(join.Humidity, 40, "12:00:03"),
		want:         reply(join.OutcomeJoined, "12:00:03", pair(v(21.5, "12:00:00"), v(40, "12:00:03"))),
		wantBuffered: buffered(nil, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "exactly Window apart join",
		setup:        []fntest.Input{rd(join.Humidity, 40, "12:00:00")},
		in:           rd(join.Temp, 21.5, "12:00:05"),
		want:         reply(join.OutcomeJoined, "12:00:05", pair(v(21.5, "12:00:05"), v(40, "12:00:00"))),
		wantBuffered: buffered(nil, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "just over Window apart do not join",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rd(join.Humidity, 40, "12:00:05.001"),
		want:         reply(join.OutcomeBuffered, "12:00:05.001"),
		wantBuffered: buffered([]join.Value{v(21.5, "12:00:00")}, []join.Value{v(40, "12:00:05.001")}),
	}, {
		name:         "the closest reading joins",
		setup:        []fntest.Input{rd(join.Temp, 1, "12:00:00"), rd(join.Temp, 2, "12:00:04")},
		in:           rd(join.Humidity, 40, "12:00:03"),
		want:         reply(join.OutcomeJoined, "12:00:04", pair(v(2, "12:00:04"), v(40, "12:00:03"))),
		wantBuffered: buffered([]join.Value{v(1, "12:00:00")}, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "on a tie the older reading joins",
		setup:        []fntest.Input{rd(join.Temp, 1, "12:00:00"), rd(join.Temp, 2, "12:00:04")},
		in:           rd(join.Humidity, 40, "12:00:02"),
		want:         reply(join.OutcomeJoined, "12:00:04", pair(v(1, "12:00:00"), v(40, "12:00:02"))),
		wantBuffered: buffered([]join.Value{v(2, "12:00:04")}, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "a reading joins at most once",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00"), rd(join.Humidity, 40, "12:00:01")},
		in:           rd(join.Humidity, 41, "12:00:02"),
		want:         reply(join.OutcomeBuffered, "12:00:02"),
		wantBuffered: buffered(nil, []join.Value{v(41, "12:00:02")}),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:  "pairs are made greedily: a closer reading arriving later does not re-pair",
		setup: []fntest.Input{rd(join.Temp, 1, "12:00:00"), rd(join.Humidity, 40, "12:00:04")},
		in:    rd(join.Temp, 2, "12:00:04"),
		want:  reply(join.OutcomeBuffered, "12:00:04"),
		// The 12:00:04 humidity joined the 12:00:00 temp when it came.
		wantBuffered: buffered([]join.Value{v(2, "12:00:04")}, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "out of order within the lateness: an older reading joins an older partner",
		setup:        []fntest.Input{rd(join.Temp, 1, "12:00:30"), rd(join.Humidity, 40, "12:00:10")},
		in:           rd(join.Temp, 2, "12:00:12"),
		want:         reply(join.OutcomeJoined, "12:00:30", pair(v(2, "12:00:12"), v(40, "12:00:10"))),
		wantBuffered: buffered([]join.Value{v(1, "12:00:30")}, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "out of order: an older reading joins a newer buffered one",
		setup:        []fntest.Input{rd(join.Humidity, 40, "12:00:20")},
		in:           rd(join.Temp, 2, "12:00:17"),
		want:         reply(join.OutcomeJoined, "12:00:20", pair(v(2, "12:00:17"), v(40, "12:00:20"))),
		wantBuffered: buffered(nil, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:         "exactly AllowedLateness old is still accepted",
		setup:        []fntest.Input{rd(join.Temp, 1, "12:01:00")},
		in:           rd(join.Humidity, 40, "12:00:30"),
		want:         reply(join.OutcomeBuffered, "12:01:00"),
		wantBuffered: buffered([]join.Value{v(1, "12:01:00")}, []join.Value{v(40, "12:00:30")}),
	}, {
		name:         "older than AllowedLateness is late: counted, not buffered, not joined",
		setup:        []fntest.Input{rd(join.Humidity, 40, "12:00:31"), rd(join.Temp, 1, "12:01:00")},
		in:           rd(join.Temp, 2, "12:00:29.999"),
		want:         reply(join.OutcomeLate, "12:01:00"),
		wantBuffered: buffered([]join.Value{v(1, "12:01:00")}, []join.Value{v(40, "12:00:31")}),
		wantStats:    join.Stats{Late: 1},
	}, {
		name:         "a duplicate of a buffered reading is counted and changes nothing else; the first value wins",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rd(join.Temp, 99, "12:00:00"),
		want:         reply(join.OutcomeDuplicate, "12:00:00"),
		wantBuffered: buffered([]join.Value{v(21.5, "12:00:00")}, nil),
		wantStats:    join.Stats{Duplicates: 1},
	}, {
		name:         "a duplicate of a joined reading does not join again",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00"), rd(join.Humidity, 40, "12:00:01"), rd(join.Humidity, 41, "12:00:02")},
		in:           rd(join.Temp, 21.5, "12:00:00"),
		want:         reply(join.OutcomeDuplicate, "12:00:02"),
		wantBuffered: buffered(nil, []join.Value{v(41, "12:00:02")}),
		wantStats:    join.Stats{Joined: 1, Duplicates: 1},
	}, {
		name:         "the same instant written with another offset is a duplicate",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rdTS(join.Temp, 21.5, "2024-05-01T14:00:00+02:00"),
		want:         reply(join.OutcomeDuplicate, "12:00:00"),
		wantBuffered: buffered([]join.Value{v(21.5, "12:00:00")}, nil),
		wantStats:    join.Stats{Duplicates: 1},
	}, {
		name:         "the same instant from the other sensor is not a duplicate",
		setup:        []fntest.Input{rd(join.Temp, 21.5, "12:00:00")},
		in:           rd(join.Humidity, 40, "12:00:00"),
		want:         reply(join.OutcomeJoined, "12:00:00", pair(v(21.5, "12:00:00"), v(40, "12:00:00"))),
		wantBuffered: buffered(nil, nil),
		wantStats:    join.Stats{Joined: 1},
	}, {
		name:  "an unjoined reading expires past Window + AllowedLateness",
		setup: []fntest.Input{rd(join.Temp, 1, "12:00:00"), rd(join.Temp, 2, "12:00:01")},
		in:    rd(join.Humidity, 40, "12:00:35.5"),
		// newest 12:00:35.5 - 35s = 12:00:00.5: the 12:00:00 temp can no
		// longer join anything acceptable; the 12:00:01 one still could.
		want:         join.Reply{Device: "d1", Outcome: join.OutcomeBuffered, Joined: []join.Pair{}, Expired: 1, Newest: at("12:00:35.5")},
		wantBuffered: buffered([]join.Value{v(2, "12:00:01")}, []join.Value{v(40, "12:00:35.5")}),
		wantStats:    join.Stats{Expired: 1},
	}, {
		name:         "exactly at the horizon a reading is kept",
		setup:        []fntest.Input{rd(join.Temp, 1, "12:00:00")},
		in:           rd(join.Humidity, 40, "12:00:35"),
		want:         reply(join.OutcomeBuffered, "12:00:35"),
		wantBuffered: buffered([]join.Value{v(1, "12:00:00")}, []join.Value{v(40, "12:00:35")}),
	}, {
		name: "joined readings are forgotten silently, not counted as expired",
		setup: []fntest.Input{
			rd(join.Temp, 1, "12:00:00"), rd(join.Humidity, 40, "12:00:01"), // joined
			rd(join.Temp, 2, "12:01:00"),
		},
		// Now 12:00:00 is late, so its duplicate is refused as late.
		in:           rd(join.Temp, 1, "12:00:00"),
		want:         reply(join.OutcomeLate, "12:01:00"),
		wantBuffered: buffered([]join.Value{v(2, "12:01:00")}, nil),
		wantStats:    join.Stats{Joined: 1, Late: 1},
	}, {
		name:         "a full buffer drops its oldest reading, counted as overflowed",
		setup:        tempsEvery(join.MaxBuffered, 100*time.Millisecond),
		in:           rd(join.Temp, 99, "12:00:06.4"),
		want:         join.Reply{Device: "d1", Outcome: join.OutcomeBuffered, Joined: []join.Pair{}, Overflowed: 1, Newest: at("12:00:06.4")},
		wantBuffered: buffered(append(values(tempsEvery(join.MaxBuffered, 100*time.Millisecond))[1:], v(99, "12:00:06.4")), nil),
		wantStats:    join.Stats{Overflowed: 1},
	}, {
		name:         "a full buffer keeps an out-of-order reading older than all others",
		setup:        append(tempsEvery(join.MaxBuffered, 100*time.Millisecond)[1:], rd(join.Temp, 7, "12:00:10")),
		in:           rd(join.Temp, 99, "11:59:59"),
		want:         join.Reply{Device: "d1", Outcome: join.OutcomeBuffered, Joined: []join.Pair{}, Overflowed: 1, Newest: at("12:00:10")},
		wantBuffered: buffered(append(append([]join.Value{v(99, "11:59:59")}, values(tempsEvery(join.MaxBuffered, 100*time.Millisecond))[2:]...), v(7, "12:00:10")), nil),
		wantStats:    join.Stats{Overflowed: 1},
	}}
	c := fntest.Serve(t, join.Handler())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := fntest.NewAgent(c)
			for i, in := range tc.setup {
				if r := fntest.ReplyOf(a.Send(t, "d1", in)); r.Status != 200 {
					t.Fatalf("setup step %d: %+v", i, r)
				}
			}
			resp := a.Send(t, "d1", tc.in)
			var got join.Reply
			decode(t, resp, &got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if len(resp.GetEmit()) != len(got.Joined) {
				t.Errorf("emitted %d events for %d pairs", len(resp.GetEmit()), len(got.Joined))
			}
			var st join.Status
			decode(t, a.Send(t, "d1", fntest.HTTP("GET", "/")), &st)
			if diff := cmp.Diff(tc.wantBuffered, st.Buffered); diff != "" {
				t.Errorf("buffered after (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantStats, st.Stats); diff != "" {
				t.Errorf("stats after (-want +got):\n%s", diff)
			}
		})
	}
}

// values is the buffered values the readings made by tempsEvery leave.
func values(ins []fntest.Input) []join.Value {
	out := make([]join.Value, 0, len(ins))
	for _, in := range ins {
		var d struct {
			Value float64   `json:"value"`
			TS    time.Time `json:"ts"`
		}
		if err := json.Unmarshal(in.Event.GetData(), &d); err != nil {
			panic(err)
		}
		out = append(out, join.Value{Value: d.Value, TS: d.TS})
	}
	return out
}

func decode(t *testing.T, resp *functionv1.HandleResponse, v any) {
	t.Helper()
	r := resp.GetReplyHttp()
	if r.GetStatus() != 200 {
		t.Fatalf("reply %d %s", r.GetStatus(), r.GetBody())
	}
	if err := json.Unmarshal(r.GetBody(), v); err != nil {
		t.Fatalf("reply %s: %v", r.GetBody(), err)
	}
}

func TestJoinedEvent(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, join.Handler()))
	a.Send(t, "d1", rd(join.Humidity, 40.5, "12:00:03.25"))
	resp := a.Send(t, "d1", rd(join.Temp, 21.5, "12:00:01"))
	want := []*functionv1.CloudEvent{{
		Source: join.Source, SpecVersion: "1.0", Type: join.TypeJoined, Subject: "d1",
		DataContentType: "application/json",
		Time:            timestamppb.New(at("12:00:03.25")), // the later of the two
		Extensions:      map[string]string{"partitionkey": "d1"},
		Data: []byte(`{"device":"d1","temp":{"value":21.5,"ts":"2024-05-01T12:00:01Z"},` +
			`"humidity":{"value":40.5,"ts":"2024-05-01T12:00:03.25Z"},"skew_ms":2250}`),
	}}
	if diff := cmp.Diff(want, resp.GetEmit(), protocmp.Transform(), protocmp.IgnoreFields(&functionv1.CloudEvent{}, "id")); diff != "" {
		t.Errorf("emitted (-want +got):\n%s", diff)
	}
	if id := resp.GetEmit()[0].GetId(); id == "" {
		t.Error("the emitted event has no id")
	}
	// The reply has the same pair, in JSON.
	wantReply := `{"device":"d1","outcome":"joined","joined":[` + string(want[0].Data) + `],"expired":0,"overflowed":0,"newest":"2024-05-01T12:00:03.25Z"}`
	if got := string(resp.GetReplyHttp().GetBody()); got != wantReply {
		t.Errorf("reply = %s\nwant    %s", got, wantReply)
	}
}

func TestStatus(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, join.Handler()))
	tests := []struct {
		name  string
		setup []fntest.Input
		in    fntest.Input
		want  string
	}{{
		name: "a device never seen",
		in:   fntest.HTTP("GET", "/"),
		want: `{"device":"d9","buffered":{"temp":[],"humidity":[]},"stats":{"joined":0,"expired":0,"overflowed":0,"late":0,"duplicates":0}}`,
	}, {
		name:  "the Status event reads, and lists only unjoined readings",
		setup: []fntest.Input{rd(join.Temp, 1, "12:00:00"), rd(join.Humidity, 40, "12:00:01"), rd(join.Humidity, 41, "12:00:20")},
		in:    fntest.CE("s", join.TypeStatus, ""),
		want: `{"device":"d9","newest":"2024-05-01T12:00:20Z","buffered":{"temp":[],"humidity":[{"value":41,"ts":"2024-05-01T12:00:20Z"}]},` +
			`"stats":{"joined":1,"expired":0,"overflowed":0,"late":0,"duplicates":0}}`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, in := range tc.setup {
				a.Send(t, "d9", in)
			}
			want := fntest.Reply{Action: "KEEP", Status: 200, Body: tc.want}
			if diff := cmp.Diff(want, fntest.ReplyOf(a.Send(t, "d9", tc.in))); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   fntest.Input
		want string
	}{
		{"no data", fntest.CE("e", join.TypeReading, ""), `data field "sensor" is required: "temp" or "humidity"`},
		{"unknown sensor", fntest.CE("e", join.TypeReading, `{"sensor":"pressure","value":1,"ts":"2024-05-01T12:00:00Z"}`), `data field "sensor" must be "temp" or "humidity", got "pressure"`},
		{"sensor not a string", fntest.CE("e", join.TypeReading, `{"sensor":1}`), `data field "sensor" must be a string, got number`},
		{"missing value", fntest.CE("e", join.TypeReading, `{"sensor":"temp","ts":"2024-05-01T12:00:00Z"}`), `data field "value" is required: a number`},
		{"value not a number", fntest.CE("e", join.TypeReading, `{"sensor":"temp","value":"21","ts":"2024-05-01T12:00:00Z"}`), `data field "value" must be a number, got string`},
		{"missing ts", fntest.CE("e", join.TypeReading, `{"sensor":"temp","value":21}`), `data field "ts" is required: an RFC 3339 time such as 2024-05-01T12:00:00Z`},
		{"ts without a zone", fntest.CE("e", join.TypeReading, `{"sensor":"temp","value":21,"ts":"2024-05-01T12:00:00"}`), `data field "ts" must be an RFC 3339 time such as 2024-05-01T12:00:00Z, got "2024-05-01T12:00:00"`},
		{"ts a number", fntest.CE("e", join.TypeReading, `{"sensor":"temp","value":21,"ts":1714564800}`), `data field "ts" must be a string, got number`},
		{"unknown type", fntest.CE("e", "com.example.sensor.Readings", `{}`), `unsupported event type "com.example.sensor.Readings": expected com.example.sensor.Reading, or a read (com.example.sensor.Status, HTTP GET)`},
	}
	a := fntest.NewAgent(fntest.Serve(t, join.Handler()))
	a.Send(t, "d1", rd(join.Temp, 21.5, "12:00:00"))
	before, _ := a.State("d1")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(map[string]string{"error": tc.want})
			want := fntest.Reply{Action: "KEEP", Status: 400, Body: string(b)}
			if diff := cmp.Diff(want, fntest.ReplyOf(a.Send(t, "d1", tc.in))); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
	if after, _ := a.State("d1"); string(after) != string(before) {
		t.Errorf("refused readings changed the state:\nbefore %s\nafter  %s", before, after)
	}
	if strings.Contains(string(before), "humidity") {
		t.Errorf("state %s has a humidity buffer, want none", before)
	}
}

// TestStream plays a device's stream with the usual mess (out of order,
// a duplicate, a late reading, a gap that expires a reading) and checks the
// pairs that come out and the counters.
func TestStream(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, join.Handler()))
	stream := []fntest.Input{
		rd(join.Temp, 20.0, "12:00:00"),
		rd(join.Humidity, 40, "12:00:02"), // joins 12:00:00
		rd(join.Humidity, 41, "12:00:12"), // waits
		rd(join.Temp, 20.5, "12:00:09"),   // out of order: joins 12:00:12
		rd(join.Temp, 20.5, "12:00:09"),   // duplicate
		rd(join.Temp, 21.0, "12:00:20"),   // waits, never joined
		rd(join.Humidity, 42, "12:01:00"), // expires 12:00:20
		rd(join.Temp, 22.0, "12:00:29"),   // late
		rd(join.Temp, 22.5, "12:00:58"),   // joins 12:01:00
	}
	var pairs []join.Pair
	for _, in := range stream {
		var r join.Reply
		decode(t, a.Send(t, "d1", in), &r)
		pairs = append(pairs, r.Joined...)
	}
	want := []join.Pair{
		pair(v(20.0, "12:00:00"), v(40, "12:00:02")),
		pair(v(20.5, "12:00:09"), v(41, "12:00:12")),
		pair(v(22.5, "12:00:58"), v(42, "12:01:00")),
	}
	if diff := cmp.Diff(want, pairs); diff != "" {
		t.Errorf("pairs (-want +got):\n%s", diff)
	}
	var st join.Status
	decode(t, a.Send(t, "d1", fntest.CE("s", join.TypeStatus, "")), &st)
	if diff := cmp.Diff(join.Stats{Joined: 3, Expired: 1, Late: 1, Duplicates: 1}, st.Stats); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// TestStoredState checks the stored JSON, and that joined readings are
// forgotten as soon as a copy of them would be late (newest - 30s), before
// unjoined ones (newest - 35s).
func TestStoredState(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, join.Handler()))
	for _, in := range []fntest.Input{
		rd(join.Temp, 1, "12:00:00"), rd(join.Humidity, 40, "12:00:01"), // joined
		rd(join.Humidity, 41, "12:00:00.5"), // unjoined
		rd(join.Temp, 2, "12:00:31.5"),
	} {
		a.Send(t, "d1", in)
	}
	want := `{"newest":"2024-05-01T12:00:31.5Z","temp":[{"value":2,"ts":"2024-05-01T12:00:31.5Z"}],` +
		`"humidity":[{"value":41,"ts":"2024-05-01T12:00:00.5Z"}],` +
		`"stats":{"joined":1,"expired":0,"overflowed":0,"late":0,"duplicates":0}}`
	if got, _ := a.State("d1"); string(got) != want {
		t.Errorf("state = %s\nwant    %s", got, want)
	}
}
