package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/sdk"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// Paths the agent answers itself on the serving port. They sit under
// /.kstate/ so they cannot shadow a user's routes.
const (
	HealthPath = "/.kstate/healthz"
	ReadyPath  = "/.kstate/readyz"
	// StatsPath answers the admin API's Stats as JSON, so tools that only
	// reach the pod over HTTP (the API server's pod proxy, for the CLI)
	// can read it. It holds counts, never entity data.
	StatsPath = "/.kstate/stats"
)

// HTTPSource is the CloudEvents source of events made from plain HTTP requests.
const HTTPSource = "/kstate/http"

// Handler is the agent's serving port: plain HTTP requests and CloudEvents in
// binary and structured mode, plus liveness and readiness. functionReady
// reports whether the function answers its health check.
func (a *Agent) Handler(functionReady func() bool) (http.Handler, error) {
	var spec *keyspec.Spec
	if a.cfg.KeySpec != "" {
		s, err := keyspec.Parse(a.cfg.KeySpec)
		if err != nil {
			return nil, fmt.Errorf("KSTATE_KEY: %w", err)
		}
		spec = &s
	}
	mux := http.NewServeMux()
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc(ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case a.storeReset.Load():
			http.Error(w, "not ready: "+errStoreReset.Error(), http.StatusServiceUnavailable)
		case a.draining.Load():
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
		case !a.preloadGateOpen():
			http.Error(w, "not ready: waiting for the preload (KSTATE_PRELOAD_GATE)", http.StatusServiceUnavailable)
		case !a.Ready():
			http.Error(w, "not ready: the state store has not answered yet", http.StatusServiceUnavailable)
		case !functionReady():
			http.Error(w, "not ready: the function is not serving yet", http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ok\n")
		}
	})
	mux.HandleFunc(StatsPath, func(w http.ResponseWriter, _ *http.Request) {
		b, err := protojson.Marshal(a.Stats())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.Handle("/", &ingress{a: a, spec: spec})
	return mux, nil
}

type ingress struct {
	a    *Agent
	spec *keyspec.Spec // nil: the defaults
}

// requestError is a 4xx answer about the request itself.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func (in *ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderPod, in.a.cfg.Pod)
	inv, err := in.invocation(w, r)
	if err != nil {
		status := http.StatusBadRequest
		var re *requestError
		if errors.As(err, &re) {
			status = re.status
		} else if s := keyspec.HTTPStatus(err); s != 0 {
			status = s
		}
		writeError(w, status, err)
		return
	}
	res, err := in.a.Invoke(r.Context(), inv)
	if res != nil {
		w.Header().Set(HeaderSlot, strconv.FormatUint(uint64(res.Slot), 10))
	}
	if err != nil {
		status := httpStatus(err, w.Header())
		if status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusMisdirectedRequest {
			in.a.logger.Warnw("event failed", zap.String("key", inv.Key), zap.Error(err))
		}
		writeError(w, status, err)
		return
	}
	if res.Duplicate {
		w.Header().Set(HeaderDuplicate, "true")
	}
	in.writeReply(r.Context(), w, res.Reply)
}

// invocation turns a request into an Invocation, or a 4xx error that names
// the problem.
func (in *ingress) invocation(w http.ResponseWriter, r *http.Request) (*Invocation, error) {
	mediaType := ""
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("malformed Content-Type %q: %v", ct, err)}
		}
		mediaType = mt
	}
	switch {
	case mediaType == "application/cloudevents-batch+json":
		return nil, &requestError{http.StatusUnsupportedMediaType, "batched CloudEvents are not supported: a batch has no single entity key; send the events one by one"}
	case strings.HasPrefix(mediaType, "application/cloudevents+") && mediaType != "application/cloudevents+json":
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported CloudEvents format %q: only application/cloudevents+json (structured) and binary mode are accepted", mediaType)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, in.a.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes (KSTATE_MAX_BODY_BYTES)", in.a.cfg.MaxBodyBytes)}
		}
		return nil, &requestError{http.StatusBadRequest, fmt.Sprintf("reading the request body: %v", err)}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	if keyspec.IsCloudEventRequest(r) {
		return in.eventInvocation(r, body)
	}
	if len(body) > 0 && !plainMediaType(mediaType) {
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Type %q: expected application/json, text/*, application/octet-stream, application/x-www-form-urlencoded or a CloudEvent", mediaType)}
	}
	key, err := keyspec.Resolve(in.spec, false).FromRequest(r, in.a.cfg.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	typ := r.Header.Get(HeaderType)
	if typ == "" {
		typ = "kstate.http." + strings.ToLower(r.Method)
	}
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[k] = strings.Join(v, ", ")
	}
	return &Invocation{
		Key: key,
		Event: &functionv1.CloudEvent{
			Id: uuid.NewString(), Source: HTTPSource, SpecVersion: "1.0", Type: typ,
			DataContentType: r.Header.Get("Content-Type"), Time: timestamppb.Now(), Data: body,
		},
		HTTP: &functionv1.HttpRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Headers: headers},
	}, nil
}

func (in *ingress) eventInvocation(r *http.Request, body []byte) (*Invocation, error) {
	// sdk-go v2.15.2 panics on a header named exactly "Ce-" (an empty
	// attribute name); it carries nothing, so drop it.
	r.Header.Del("Ce-")
	ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err != nil {
		return nil, &requestError{http.StatusBadRequest, fmt.Sprintf("malformed CloudEvent: %v", err)}
	}
	if err := ev.Validate(); err != nil {
		return nil, &requestError{http.StatusBadRequest, fmt.Sprintf("invalid CloudEvent: %v", err)}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	spec := keyspec.Resolve(in.spec, true)
	var key string
	if spec.IsCloudEvent() {
		key, err = spec.FromEvent(ev)
	} else {
		key, err = spec.FromRequest(r, in.a.cfg.MaxBodyBytes)
	}
	if err != nil {
		return nil, err
	}
	pe, err := sdk.ToProto(*ev)
	if err != nil {
		return nil, &requestError{http.StatusBadRequest, fmt.Sprintf("CloudEvent not representable: %v", err)}
	}
	return &Invocation{Key: key, Event: pe, Dedup: true}, nil
}

// plainMediaType: bodies kstate passes to the function as opaque event data.
// Form bodies are accepted because that is what `curl -d` sends by default;
// multipart and other framed types are refused, since the function would get
// them without their framing guarantees.
func plainMediaType(mt string) bool {
	switch {
	case mt == "", mt == "application/json", strings.HasSuffix(mt, "+json"), strings.HasPrefix(mt, "text/"),
		mt == "application/octet-stream", mt == "application/x-www-form-urlencoded":
		return true
	}
	return false
}

func (in *ingress) writeReply(ctx context.Context, w http.ResponseWriter, reply *functionv1.HandleResponse) {
	switch rep := reply.GetReply().(type) {
	case *functionv1.HandleResponse_ReplyHttp:
		h := rep.ReplyHttp
		for k, v := range h.GetHeaders() {
			w.Header().Set(k, v)
		}
		if h.GetContentType() != "" {
			w.Header().Set("Content-Type", h.GetContentType())
		}
		status := int(h.GetStatus())
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		w.Write(h.GetBody())
	case *functionv1.HandleResponse_ReplyEvent:
		ev, err := sdk.FromProto(rep.ReplyEvent)
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Errorf("the function replied with an invalid CloudEvent: %w", err))
			return
		}
		if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(&ev), http.StatusOK, w); err != nil {
			in.a.logger.Warnw("writing the reply event failed", zap.Error(err))
		}
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
