package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// An instant with nanoseconds, in a zone other than UTC: the wire form is
// UTC, so the round trip must keep the instant, not the zone.
var testTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))

// binaryData is not UTF-8, so any text treatment on the way would show.
var binaryData = []byte{0x00, 0xff, 0xfe, 0x80, '\n', 0x01}

// attrs lists an event's attributes, extensions ("ext:" prefix) and data in
// their canonical string forms.
func attrs(t *testing.T, e event.Event) map[string]string {
	t.Helper()
	m := map[string]string{
		"id":          e.ID(),
		"source":      e.Source(),
		"specversion": e.SpecVersion(),
		"type":        e.Type(),
	}
	for k, v := range map[string]string{
		"subject": e.Subject(), "datacontenttype": e.DataContentType(), "dataschema": e.DataSchema(), "data": string(e.Data()),
	} {
		if v != "" {
			m[k] = v
		}
	}
	if tm := e.Time(); !tm.IsZero() {
		m["time"] = tm.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			t.Fatalf("extension %s: %v", k, err)
		}
		m["ext:"+k] = s
	}
	return m
}

func fullEvent(t *testing.T) event.Event {
	t.Helper()
	ref, err := url.Parse("https://example.com/ref")
	if err != nil {
		t.Fatal(err)
	}
	e := event.New()
	e.SetID("a-1")
	e.SetSource("https://example.com/src")
	e.SetType("com.example.thing")
	e.SetSubject("carts/1")
	e.SetDataSchema("https://example.com/schema")
	e.SetTime(testTime)
	if err := e.SetData("application/octet-stream", binaryData); err != nil {
		t.Fatal(err)
	}
	e.SetExtension("partitionkey", "cart-1")
	e.SetExtension("count", int32(42))
	e.SetExtension("flag", true)
	e.SetExtension("blob", []byte{1, 2, 3})
	e.SetExtension("when", testTime)
	e.SetExtension("ref", types.URI{URL: *ref})
	if err := e.Validate(); err != nil {
		t.Fatalf("test event is invalid: %v", err)
	}
	return e
}

func fullProto() *functionv1.CloudEvent {
	return &functionv1.CloudEvent{
		Id:              "a-1",
		Source:          "https://example.com/src",
		SpecVersion:     "1.0",
		Type:            "com.example.thing",
		Subject:         "carts/1",
		DataContentType: "application/octet-stream",
		DataSchema:      "https://example.com/schema",
		Time:            timestamppb.New(testTime),
		Extensions: map[string]string{
			"partitionkey": "cart-1",
			"count":        "42",
			"flag":         "true",
			"blob":         "AQID",
			"when":         "2024-05-06T06:08:09.123456789Z",
			"ref":          "https://example.com/ref",
		},
		Data: binaryData,
	}
}

func TestToProto(t *testing.T) {
	jsonEvent := event.New()
	jsonEvent.SetID("j-1")
	jsonEvent.SetSource("/src")
	jsonEvent.SetType("counter.add")
	if err := jsonEvent.SetData(event.ApplicationJSON, map[string]int{"by": 2}); err != nil {
		t.Fatal(err)
	}

	minimal := event.New()
	minimal.SetID("m-1")
	minimal.SetSource("/src")
	minimal.SetType("t")

	v03 := event.New(event.CloudEventsVersionV03)
	v03.SetID("o-1")
	v03.SetSource("/src")
	v03.SetType("t")
	v03.SetDataSchema("https://example.com/schema")

	tests := []struct {
		name string
		in   event.Event
		want *functionv1.CloudEvent
	}{{
		name: "every attribute, extension types, binary data",
		in:   fullEvent(t),
		want: fullProto(),
	}, {
		name: "JSON data",
		in:   jsonEvent,
		want: &functionv1.CloudEvent{
			Id: "j-1", Source: "/src", SpecVersion: "1.0", Type: "counter.add",
			DataContentType: "application/json", Data: []byte(`{"by":2}`),
		},
	}, {
		name: "required attributes only",
		in:   minimal,
		want: &functionv1.CloudEvent{Id: "m-1", Source: "/src", SpecVersion: "1.0", Type: "t"},
	}, {
		name: "CloudEvents 0.3 is converted to 1.0",
		in:   v03,
		want: &functionv1.CloudEvent{Id: "o-1", Source: "/src", SpecVersion: "1.0", Type: "t", DataSchema: "https://example.com/schema"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ToProto(tc.in)
			if err != nil {
				t.Fatalf("ToProto: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("ToProto (-want +got):\n%s", diff)
			}
		})
	}
	if v03.SpecVersion() != event.CloudEventsVersionV03 {
		t.Errorf("ToProto changed the caller's event to spec version %s", v03.SpecVersion())
	}
}

func TestToProtoInvalid(t *testing.T) {
	noSource := event.New()
	noSource.SetID("1")
	noSource.SetType("t")
	tests := []struct {
		name    string
		in      event.Event
		wantErr string
	}{{
		name:    "zero event",
		in:      event.Event{},
		wantErr: "invalid CloudEvent: the event has no context (use event.New)",
	}, {
		name:    "no source",
		in:      noSource,
		wantErr: "invalid CloudEvent: source: REQUIRED",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ToProto(tc.in)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("ToProto error = %v, want ErrInvalidEvent", err)
			}
			if err.Error() != tc.wantErr {
				t.Errorf("error = %q, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFromProto(t *testing.T) {
	tests := []struct {
		name string
		in   *functionv1.CloudEvent
		want map[string]string
	}{{
		name: "every attribute; extensions come back as strings",
		in:   fullProto(),
		want: map[string]string{
			"id": "a-1", "source": "https://example.com/src", "specversion": "1.0", "type": "com.example.thing",
			"subject": "carts/1", "datacontenttype": "application/octet-stream", "dataschema": "https://example.com/schema",
			"time": "2024-05-06T06:08:09.123456789Z", "data": string(binaryData),
			"ext:partitionkey": "cart-1", "ext:count": "42", "ext:flag": "true", "ext:blob": "AQID",
			"ext:when": "2024-05-06T06:08:09.123456789Z", "ext:ref": "https://example.com/ref",
		},
	}, {
		name: "empty spec version means 1.0",
		in:   &functionv1.CloudEvent{Id: "1", Source: "/s", Type: "t"},
		want: map[string]string{"id": "1", "source": "/s", "specversion": "1.0", "type": "t"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromProto(tc.in)
			if err != nil {
				t.Fatalf("FromProto: %v", err)
			}
			if diff := cmp.Diff(tc.want, attrs(t, got)); diff != "" {
				t.Errorf("FromProto (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromProtoInvalid(t *testing.T) {
	valid := func(change func(*functionv1.CloudEvent)) *functionv1.CloudEvent {
		pb := &functionv1.CloudEvent{Id: "1", Source: "/s", SpecVersion: "1.0", Type: "t"}
		change(pb)
		return pb
	}
	tests := []struct {
		name    string
		in      *functionv1.CloudEvent
		wantErr string
	}{{
		name:    "nil",
		wantErr: "invalid CloudEvent: no event",
	}, {
		name:    "other spec version",
		in:      valid(func(pb *functionv1.CloudEvent) { pb.SpecVersion = "0.3" }),
		wantErr: `invalid CloudEvent: spec_version "0.3" is not supported, kstate speaks CloudEvents 1.0`,
	}, {
		name:    "no id",
		in:      valid(func(pb *functionv1.CloudEvent) { pb.Id = "" }),
		wantErr: "invalid CloudEvent: id: MUST be a non-empty string",
	}, {
		name:    "extension name with a dash",
		in:      valid(func(pb *functionv1.CloudEvent) { pb.Extensions = map[string]string{"bad-name": "v"} }),
		wantErr: "invalid CloudEvent: extension:bad-name: bad key, CloudEvents attribute names MUST consist of lower-case letters ('a' to 'z'), upper-case letters ('A' to 'Z') or digits ('0' to '9') from the ASCII character set",
	}, {
		name:    "extension overriding an attribute",
		in:      valid(func(pb *functionv1.CloudEvent) { pb.Extensions = map[string]string{"id": "2"} }),
		wantErr: `invalid CloudEvent: extension:id: bad key "id": CloudEvents spec attribute MUST NOT be overwritten by extension`,
	}, {
		name:    "time out of range",
		in:      valid(func(pb *functionv1.CloudEvent) { pb.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: 2e9} }),
		wantErr: "invalid CloudEvent: time: seconds 1 and nanos 2000000000 are not a valid timestamp",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromProto(tc.in)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("FromProto error = %v, want ErrInvalidEvent", err)
			}
			if err.Error() != tc.wantErr {
				t.Errorf("error = %q\nwant    %q", err, tc.wantErr)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	full := fullEvent(t)
	pb, err := ToProto(full)
	if err != nil {
		t.Fatalf("ToProto: %v", err)
	}
	back, err := FromProto(pb)
	if err != nil {
		t.Fatalf("FromProto: %v", err)
	}
	if diff := cmp.Diff(attrs(t, full), attrs(t, back)); diff != "" {
		t.Errorf("event -> proto -> event (-want +got):\n%s", diff)
	}
	if !back.Time().Equal(testTime) {
		t.Errorf("time = %v, want the instant %v", back.Time(), testTime)
	}
	again, err := ToProto(back)
	if err != nil {
		t.Fatalf("ToProto again: %v", err)
	}
	if diff := cmp.Diff(pb, again, protocmp.Transform()); diff != "" {
		t.Errorf("proto -> event -> proto (-want +got):\n%s", diff)
	}
}

// The agent may write a converted event in structured JSON mode (e.g. to a
// broker); its data must survive that whatever the content type.
func TestFromProtoDataSurvivesStructuredMode(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		data        []byte
	}{
		{"binary", "application/octet-stream", binaryData},
		{"text", "text/plain; charset=utf-8", []byte("hello\n")},
		{"JSON", "application/json", []byte(`{"by":2}`)},
		{"JSON without a content type", "", []byte(`[1,2]`)},
		{"text without a content type", "", []byte("two")},
		{"invalid JSON typed as JSON", "application/json", []byte("{oops")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := FromProto(&functionv1.CloudEvent{Id: "1", Source: "/s", Type: "t", DataContentType: tc.contentType, Data: tc.data})
			if err != nil {
				t.Fatalf("FromProto: %v", err)
			}
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			var back event.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", b, err)
			}
			if !bytes.Equal(back.Data(), tc.data) {
				t.Errorf("data after structured mode = %q, want %q (JSON: %s)", back.Data(), tc.data, b)
			}
		})
	}
}
