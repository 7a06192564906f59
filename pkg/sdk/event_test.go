package sdk

import (
	"errors"
	"net/http"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
)

func TestHTTPType(t *testing.T) {
	for method, want := range map[string]string{
		http.MethodGet:  "kstate.http.get",
		http.MethodPost: "kstate.http.post",
		"patch":         "kstate.http.patch",
	} {
		if got := HTTPType(method); got != want {
			t.Errorf("HTTPType(%q) = %q, want %q", method, got, want)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	type item struct {
		Name string `json:"name"`
	}
	type input struct {
		By    int64   `json:"by"`
		Ratio float64 `json:"ratio"`
		Small uint8   `json:"small"`
		On    bool    `json:"on"`
		Item  item    `json:"item"`
		Tags  []string
	}
	tests := []struct {
		name    string
		data    string
		want    input
		wantErr string // the 400 message; empty for success
	}{{
		name: "empty data keeps the defaults",
		want: input{By: 1},
	}, {
		name: "blank data keeps the defaults",
		data: " \n",
		want: input{By: 1},
	}, {
		name: "fields",
		data: `{"by": -3, "item": {"name": "x"}, "unknown": true}`,
		want: input{By: -3, Item: item{Name: "x"}},
	}, {
		name: "null keeps the default",
		data: `{"by": null}`,
		want: input{By: 1},
	}, {
		name:    "not JSON",
		data:    `by=2`,
		wantErr: "data is not valid JSON: invalid character 'b' looking for beginning of value",
	}, {
		name:    "trailing garbage",
		data:    `{"by": 2} x`,
		wantErr: "data is not valid JSON: invalid character 'x' after top-level value",
	}, {
		name:    "fraction for an integer",
		data:    `{"by": 1.5}`,
		wantErr: `data field "by" must be an integer, got number 1.5`,
	}, {
		name:    "string for an integer",
		data:    `{"by": "2"}`,
		wantErr: `data field "by" must be an integer, got string`,
	}, {
		name:    "integer too large",
		data:    `{"by": 9223372036854775808}`,
		wantErr: `data field "by" must be an integer that fits int64, got number 9223372036854775808`,
	}, {
		name:    "negative for an unsigned field",
		data:    `{"small": -1}`,
		wantErr: `data field "small" must be an integer that fits uint8, got number -1`,
	}, {
		name:    "string for a number",
		data:    `{"ratio": "x"}`,
		wantErr: `data field "ratio" must be a number, got string`,
	}, {
		name:    "string for a bool",
		data:    `{"on": "yes"}`,
		wantErr: `data field "on" must be true or false, got string`,
	}, {
		name:    "nested field",
		data:    `{"item": {"name": 5}}`,
		wantErr: `data field "item.name" must be a string, got number`,
	}, {
		name:    "object for an array",
		data:    `{"Tags": {}}`,
		wantErr: `data field "Tags" must be an array, got object`,
	}, {
		name:    "not an object",
		data:    `5`,
		wantErr: `data must be a JSON object, got number`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := event.New()
			if tc.data != "" {
				e.DataEncoded = []byte(tc.data)
			}
			got := input{By: 1}
			err := Event{Event: e}.DecodeJSON(&got)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeJSON: %v", err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("decoded (-want +got):\n%s", diff)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("DecodeJSON error = %v, want a *StatusError", err)
			}
			if se.Code != http.StatusBadRequest || se.Message != tc.wantErr {
				t.Errorf("error = %d %q, want 400 %q", se.Code, se.Message, tc.wantErr)
			}
		})
	}
}

func TestDecodeJSONNotAPointerIsNotTheCallersFault(t *testing.T) {
	e := event.New()
	e.DataEncoded = []byte(`{}`)
	var v struct{}
	err := Event{Event: e}.DecodeJSON(v)
	var se *StatusError
	if err == nil || errors.As(err, &se) {
		t.Errorf("DecodeJSON(non-pointer) = %v, want a plain error (a 500, not a 400)", err)
	}
}
