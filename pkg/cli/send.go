package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// Modes of --mode: the CloudEvents HTTP content modes.
const (
	modeBinary     = "binary"
	modeStructured = "structured"
)

// maxReplyBytes bounds the reply body send reads.
const maxReplyBytes = 10 << 20

// SendResult is what `send` prints.
type SendResult struct {
	URL string `json:"url"`
	// Mode is binary or structured.
	Mode string `json:"mode"`
	// KeySpec is where the key was put (the Service's kstate.dev/key, or
	// the CloudEvents default ce:partitionkey).
	KeySpec string    `json:"keySpec"`
	Sent    SentEvent `json:"sent"`

	Status     int    `json:"status"`
	StatusText string `json:"statusText"`
	// Pod, Slot and Duplicate are the agent's Kstate-Pod, Kstate-Slot and
	// Kstate-Duplicate reply headers.
	Pod       string `json:"pod,omitempty"`
	Slot      string `json:"slot,omitempty"`
	Duplicate bool   `json:"duplicate"`
	// Reply is the reply CloudEvent; Body the reply body when the reply is
	// not a CloudEvent.
	Reply *ReplyEvent `json:"reply,omitempty"`
	Body  *Payload    `json:"body,omitempty"`
}

// SentEvent identifies the event that was sent.
type SentEvent struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Type   string `json:"type"`
	Key    string `json:"key"`
}

// ReplyEvent is a CloudEvent the Service answered with.
type ReplyEvent struct {
	ID         string            `json:"id"`
	Source     string            `json:"source"`
	Type       string            `json:"type"`
	Subject    string            `json:"subject,omitempty"`
	Extensions map[string]string `json:"extensions,omitempty"`
	Data       *Payload          `json:"data,omitempty"`
}

type sendOptions struct {
	key, typ, data, source, id, mode, url, keySpec string
	// ingress, when set, is where the request goes; the URL's host stays in
	// the Host header, which is how an ingress tells Services apart.
	ingress string
	timeout time.Duration
	// sourceSet: --source was given.
	sourceSet bool
}

func newSendCommand(p *Params) *cobra.Command {
	var o sendOptions
	cmd := &cobra.Command{
		Use:   "send SERVICE --key KEY --type TYPE",
		Short: "Send a CloudEvent for an entity key to a Service and print the reply",
		Long: "send builds a CloudEvent (CloudEvents sdk-go), puts the entity key where the Service's key spec\n" +
			"(kstate.dev/key) says (a ce: attribute, a header, a path segment or a query parameter; the\n" +
			"partitionkey extension by default), sends it to the Service's URL (status.url, or --url) in binary\n" +
			"or structured mode, and prints the reply: status, the Kstate-Pod, Kstate-Slot and Kstate-Duplicate\n" +
			"headers, and the reply event or body. A reply status of 300 or more makes it exit 1.\n" +
			"With both --url and --key-spec it does not need a cluster (e.g. for `kn kstate dev`).",
		Example: "  kn kstate send counter --key alice --type counter.add --data '{\"by\": 2}'\n" +
			"  kn kstate send cart --key c-42 --type cart.add --data '{\"sku\":\"x\"}' --mode structured\n" +
			"  kn kstate send counter --url http://127.0.0.1:8080 --key-spec ce:partitionkey --key bob --type counter.add",
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.sourceSet = cmd.Flags().Changed("source")
			return p.send(cmd, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.key, "key", "", "entity key of the event (required)")
	f.StringVar(&o.typ, "type", "", "CloudEvents type (required, unless the key spec is ce:type)")
	f.StringVar(&o.data, "data", "", "event data, JSON (sent as application/json)")
	f.StringVar(&o.source, "source", "/kn-kstate", "CloudEvents source")
	f.StringVar(&o.id, "id", "", "CloudEvents id (default: a new UUID); resend an id to see deduplication")
	f.StringVar(&o.mode, "mode", modeBinary, "CloudEvents HTTP mode: binary or structured")
	f.StringVar(&o.url, "url", "", "where to send (default: the Service's status.url)")
	f.StringVar(&o.ingress, "ingress", "", "HOST:PORT of the cluster's ingress to send to, with the URL's host in the Host header (when the Service's domain does not resolve here)")
	f.StringVar(&o.keySpec, "key-spec", "", "key spec to place the key by (default: the Service's kstate.dev/key)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the reply")
	return cmd
}

func (p *Params) send(cmd *cobra.Command, name string, o sendOptions) error {
	if err := p.checkOutput(); err != nil {
		return err
	}
	switch {
	case o.key == "":
		return fmt.Errorf("--key is required: the entity key of the event")
	case o.mode != modeBinary && o.mode != modeStructured:
		return fmt.Errorf("--mode %q: expected binary or structured", o.mode)
	case o.data != "" && !json.Valid([]byte(o.data)):
		return fmt.Errorf("--data: not valid JSON: %s", oneLine(o.data))
	}
	if err := keyspec.ValidateKey(o.key); err != nil {
		return fmt.Errorf("--key %q: %w", o.key, err)
	}
	var configured keyspec.Spec
	if o.keySpec != "" {
		s, err := keyspec.Parse(o.keySpec)
		if err != nil {
			return fmt.Errorf("--key-spec: %w", err)
		}
		configured = s
	}
	var target *url.URL
	if o.url != "" {
		u, err := url.Parse(o.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--url %q: expected an absolute http:// or https:// URL", o.url)
		}
		target = u
	}
	if o.ingress != "" {
		if h, port, err := net.SplitHostPort(o.ingress); err != nil || h == "" || port == "" {
			return fmt.Errorf("--ingress %q: expected HOST:PORT of the cluster's ingress, e.g. 10.0.0.1:80", o.ingress)
		}
	}

	ctx := cmd.Context()
	hint := ""
	if target == nil || o.keySpec == "" {
		_, ns, svc, err := p.service(ctx, name)
		if err != nil {
			return err
		}
		if o.keySpec == "" {
			r, err := kstate.ParseRouting(ns, name, svc.Spec.Template.Annotations)
			if err != nil {
				return fmt.Errorf("service %q in namespace %q: %w", name, ns, err)
			}
			configured = r.Key
		}
		if target == nil {
			if svc.Status.URL == nil {
				return fmt.Errorf("service %q in namespace %q has no URL yet (is it ready? see `kn service describe %s`); pass --url", name, ns, name)
			}
			target = svc.Status.URL.URL()
			hint = "; if the Service's domain does not resolve here, pass --ingress HOST:PORT of the cluster's ingress (port-forward it if needed)"
		}
	}
	spec := keyspec.Resolve(&configured, true)

	ev, req, err := buildRequest(ctx, o, spec, target)
	if err != nil {
		return err
	}
	if o.ingress != "" {
		req.Host = req.URL.Host
		req.URL.Host = o.ingress
	}
	res := &SendResult{
		URL: req.URL.String(), Mode: o.mode, KeySpec: spec.String(),
		Sent: SentEvent{ID: ev.ID(), Source: ev.Source(), Type: ev.Type(), Key: o.key},
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	resp, err := p.httpClient().Do(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("cannot reach service %q at %s: %w%s", name, res.URL, unwrapURLError(err), hint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return fmt.Errorf("reading the reply of service %q: %w", name, err)
	}
	res.Status, res.StatusText = resp.StatusCode, resp.Status
	res.Pod = resp.Header.Get(agent.HeaderPod)
	res.Slot = resp.Header.Get(agent.HeaderSlot)
	res.Duplicate = strings.EqualFold(resp.Header.Get(agent.HeaderDuplicate), "true")
	res.Reply, res.Body = readReply(ctx, resp, body)

	if err := p.print(cmd.OutOrStdout(), res, res.table); err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("service %q answered %s", name, resp.Status)
	}
	return nil
}

// buildRequest makes the CloudEvent and the HTTP request that carries it,
// with the key where spec reads it, and checks with spec itself that it
// does: the router and the agent will find exactly this key.
func buildRequest(ctx context.Context, o sendOptions, spec keyspec.Spec, target *url.URL) (*event.Event, *http.Request, error) {
	ev := event.New()
	id := o.id
	if id == "" {
		id = uuid.NewString()
	}
	ev.SetID(id)
	ev.SetSource(o.source)
	ev.SetType(o.typ)
	if o.data != "" {
		if err := ev.SetData(event.ApplicationJSON, []byte(o.data)); err != nil {
			return nil, nil, fmt.Errorf("--data: %w", err)
		}
	}

	u := *target
	var header string
	src, arg, _ := strings.Cut(spec.String(), ":")
	switch src {
	case "ce":
		switch arg {
		case "subject":
			ev.SetSubject(o.key)
		case "type":
			if o.typ != "" && o.typ != o.key {
				return nil, nil, fmt.Errorf("--type %q: the key spec %s takes the key from the event type, so leave --type out (or make it the key)", o.typ, spec)
			}
			ev.SetType(o.key)
		case "source":
			if o.sourceSet && o.source != o.key {
				return nil, nil, fmt.Errorf("--source %q: the key spec %s takes the key from the event source, so leave --source out (or make it the key)", o.source, spec)
			}
			ev.SetSource(o.key)
		default:
			ev.SetExtension(arg, o.key)
		}
	case "header":
		header = arg
	case "path":
		u.Path = strings.Replace(arg, "{key}", o.key, 1)
		u.RawPath = strings.Replace(arg, "{key}", url.PathEscape(o.key), 1)
	case "query":
		q := u.Query()
		q.Set(arg, o.key)
		u.RawQuery = q.Encode()
	}
	if ev.Type() == "" {
		return nil, nil, fmt.Errorf("--type is required: the CloudEvents type of the event")
	}
	if err := ev.Validate(); err != nil {
		return nil, nil, fmt.Errorf("the CloudEvent is not valid: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--url %q: %w", u.String(), err)
	}
	wctx := ctx
	if o.mode == modeStructured {
		wctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteRequest(wctx, binding.ToMessage(&ev), req); err != nil {
		return nil, nil, fmt.Errorf("encoding the CloudEvent: %w", err)
	}
	if header != "" {
		req.Header.Set(header, o.key)
	}
	var body []byte
	if req.Body != nil {
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, nil, fmt.Errorf("encoding the CloudEvent: %w", err)
		}
	}
	setBody(req, body)

	check := req.Clone(ctx)
	setBody(check, body)
	got, err := spec.FromRequest(check, int64(len(body))+1)
	if err != nil || got != o.key {
		return nil, nil, fmt.Errorf("the request does not carry key %q where %s reads it (found %q, %v); this is a bug in kn-kstate", o.key, spec, got, err)
	}
	return &ev, req, nil
}

func setBody(req *http.Request, body []byte) {
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// readReply decodes a reply CloudEvent (binary or structured), or returns
// the body as it is.
func readReply(ctx context.Context, resp *http.Response, body []byte) (*ReplyEvent, *Payload) {
	r := *resp
	r.Body = io.NopCloser(bytes.NewReader(body))
	msg := cehttp.NewMessageFromHttpResponse(&r)
	defer msg.Finish(nil)
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return nil, newPayload(body)
	}
	ev, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return nil, newPayload(body)
	}
	re := &ReplyEvent{ID: ev.ID(), Source: ev.Source(), Type: ev.Type(), Subject: ev.Subject(), Data: newPayload(ev.Data())}
	for k, v := range ev.Extensions() {
		if re.Extensions == nil {
			re.Extensions = map[string]string{}
		}
		re.Extensions[k] = fmt.Sprint(v)
	}
	return re, nil
}

// unwrapURLError drops net/http's `Post "URL": ` prefix: the message
// names the URL already.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (r *SendResult) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Sent:\t%s %s from %s, key %q in %s (%s mode) to %s\n", r.Sent.Type, r.Sent.ID, r.Sent.Source, r.Sent.Key, r.KeySpec, r.Mode, r.URL)
	fmt.Fprintf(tw, "Status:\t%s\n", r.StatusText)
	fmt.Fprintf(tw, "Pod:\t%s\n", orDash(r.Pod))
	fmt.Fprintf(tw, "Slot:\t%s\n", orDash(r.Slot))
	fmt.Fprintf(tw, "Duplicate:\t%s\n", yesNo(r.Duplicate))
	if re := r.Reply; re != nil {
		line := fmt.Sprintf("CloudEvent %s %s from %s", re.Type, re.ID, re.Source)
		if re.Subject != "" {
			line += ", subject " + re.Subject
		}
		fmt.Fprintf(tw, "Reply:\t%s\n", line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	switch {
	case r.Reply != nil:
		_, err = fmt.Fprintf(w, "Data:\n%s\n", r.Reply.Data)
	case r.Body != nil:
		_, err = fmt.Fprintf(w, "Body:\n%s\n", r.Body)
	}
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
