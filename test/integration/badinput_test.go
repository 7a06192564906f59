package integration

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// refusal is what a bad request must get: a status and a JSON
// {"error": ...} whose message contains Error.
type refusal struct {
	Status      int
	ContentType string
	Error       string
}

// Bad input gets a 4xx whose JSON body {"error": ...} names the problem,
// and nothing reaches the function or the state.
func TestBadInputIsRefusedWithAClearMessage(t *testing.T) {
	storeURL := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	dflt := proctest.StartAgent(t, proctest.AgentConfig{Pod: "bad-default", Space: space, StoreURL: storeURL, Function: fn.Addr})
	small := proctest.StartAgent(t, proctest.AgentConfig{
		Pod: "bad-small", Space: redistest.UniqueSpace(t), StoreURL: storeURL, Function: fn.Addr,
		Env: map[string]string{"KSTATE_MAX_BODY_BYTES": "1024"},
	})

	ceHeaders := func(drop string) map[string]string {
		h := map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": "bad-1", "Ce-Source": "/integration/bad",
			"Ce-Type": "counter.add", "Ce-Partitionkey": "bad-key", "Content-Type": "application/json",
		}
		delete(h, drop)
		return h
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	if err := mw.WriteField("by", "1"); err != nil {
		t.Fatal(err)
	}
	mw.Close()
	big := func(n int) string { return `{"by":1,"pad":"` + strings.Repeat("x", n) + `"}` }

	tests := []struct {
		name    string
		agent   *proctest.Agent
		method  string
		headers map[string]string
		body    string
		want    refusal
	}{{
		name:    "no key",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/json"},
		body:    `{"by":1}`,
		want:    refusal{Status: 400, Error: `header "Kstate-Key" is missing or empty`},
	}, {
		name:    "empty key",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/json", "Kstate-Key": ""},
		body:    `{"by":1}`,
		want:    refusal{Status: 400, Error: "Kstate-Key"},
	}, {
		name:    "structured CloudEvent whose body is not JSON",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/cloudevents+json"},
		body:    `{"specversion": "1.0", "id": `,
		want:    refusal{Status: 400, Error: "malformed CloudEvent"},
	}, {
		name:    "binary CloudEvent without ce-id",
		agent:   dflt,
		headers: ceHeaders("Ce-Id"),
		body:    `{"by":1}`,
		want:    refusal{Status: 400, Error: "invalid CloudEvent: id: MUST be a non-empty string"},
	}, {
		name:    "binary CloudEvent without a partition key",
		agent:   dflt,
		headers: ceHeaders("Ce-Partitionkey"),
		body:    `{"by":1}`,
		want:    refusal{Status: 400, Error: "no entity key"},
	}, {
		name:    "body over KSTATE_MAX_BODY_BYTES",
		agent:   small,
		headers: map[string]string{"Content-Type": "application/json", "Kstate-Key": "k"},
		body:    big(2048),
		want:    refusal{Status: 413, Error: "1024 bytes (KSTATE_MAX_BODY_BYTES)"},
	}, {
		name:    "structured CloudEvent over KSTATE_MAX_BODY_BYTES",
		agent:   small,
		headers: map[string]string{"Content-Type": "application/cloudevents+json"},
		body:    `{"specversion":"1.0","id":"1","source":"/s","type":"t","partitionkey":"k","data":` + big(2048) + `}`,
		want:    refusal{Status: 413, Error: "1024 bytes"},
	}, {
		name:    "body over the default limit of 1 MiB",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/json", "Kstate-Key": "k"},
		body:    big(1 << 20),
		want:    refusal{Status: 413, Error: "1048576 bytes"},
	}, {
		name:    "multipart/form-data",
		agent:   dflt,
		headers: map[string]string{"Content-Type": mw.FormDataContentType(), "Kstate-Key": "k"},
		body:    form.String(),
		want:    refusal{Status: 415, Error: `"multipart/form-data"`},
	}, {
		name:    "batched CloudEvents",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/cloudevents-batch+json"},
		body:    `[{"specversion":"1.0","id":"1","source":"/s","type":"t","partitionkey":"k"}]`,
		want:    refusal{Status: 415, Error: "batched CloudEvents are not supported"},
	}, {
		name:    "CloudEvents in a format other than JSON",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/cloudevents+xml"},
		body:    `<event/>`,
		want:    refusal{Status: 415, Error: "application/cloudevents+xml"},
	}, {
		name:    "malformed Content-Type",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/json; =", "Kstate-Key": "k"},
		body:    `{"by":1}`,
		want:    refusal{Status: 415, Error: "malformed Content-Type"},
	}, {
		name:    "the function's own 400 passes through",
		agent:   dflt,
		headers: map[string]string{"Content-Type": "application/json", "Kstate-Key": "k"},
		body:    `{"by":"two"}`,
		want:    refusal{Status: 400, Error: `data field "by" must be an integer`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, tc.agent.URL, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				req.Header[http.CanonicalHeaderKey(k)] = []string{v}
			}
			ans, err := proctest.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := refusal{Status: ans.Status, ContentType: ans.Header.Get("Content-Type"), Error: proctest.ErrorMessage(ans.Body)}
			want := tc.want
			want.ContentType = "application/json"
			// Compare the message by substring; a mismatch shows it whole.
			if strings.Contains(got.Error, want.Error) {
				got.Error = want.Error
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", method, tc.name, diff)
			}
		})
	}

	// None of it was applied.
	for _, a := range []*proctest.Agent{dflt, small} {
		if n := proctest.ReadCount(t, a.URL, "k"); n != 0 {
			t.Errorf("agent %s: key k counts %d after only refused requests, want 0", a.Cfg.Pod, n)
		}
	}
	if n := proctest.ReadCount(t, dflt.URL, "bad-key"); n != 0 {
		t.Errorf("key bad-key counts %d after only refused events, want 0", n)
	}
}
