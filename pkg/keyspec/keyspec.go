package keyspec

import (
	"fmt"
	"net/textproto"
	"strings"
)

const (
	// DefaultCloudEventSpec is used for CloudEvents when a Service has no
	// kstate.dev/key annotation: the CloudEvents partitioning extension,
	// which exists for exactly this purpose.
	DefaultCloudEventSpec = "ce:partitionkey"

	// DefaultHTTPSpec is used for plain HTTP requests when a Service has no
	// kstate.dev/key annotation.
	DefaultHTTPSpec = "header:Kstate-Key"
)

var (
	defaultCloudEvent = MustParse(DefaultCloudEventSpec)
	defaultHTTP       = MustParse(DefaultHTTPSpec)
)

// expected ends every message about an unusable source, so a user who got
// the source wrong sees the whole grammar.
const expected = "expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME"

type source uint8

const (
	srcNone source = iota // the zero Spec
	srcHeader
	srcCE
	srcPath
	srcQuery
)

// ceAttr says how a ce: attribute is carried. Context attributes are read
// through sdk-go's accessors and normalized the way sdk-go's setters do;
// extensions are carried verbatim.
type ceAttr uint8

const (
	ceExtension ceAttr = iota
	ceSubject
	ceType
	ceSource
)

// Spec says where a request carries its entity key. The zero Spec is "not
// configured": Resolve replaces it with a default and extraction with it
// fails. Specs are comparable with ==.
type Spec struct {
	src source
	// arg is the canonical argument: the canonical header name, the
	// CloudEvents attribute name, the path template or the query name.
	arg string
	// ceHeader is the binary-mode header of a ce: attribute
	// ("Ce-Partitionkey"), computed once so the hot path does not build it.
	ceHeader string
	attr     ceAttr
}

// Parse parses a kstate.dev/key annotation value. Surrounding white space
// is ignored, header names are canonicalized, and everything else is taken
// as written, so Parse(s.String()) == s for every Spec s it returns.
// Errors wrap ErrInvalidSpec.
func Parse(s string) (Spec, error) {
	text := strings.TrimSpace(s)
	fail := func(format string, args ...any) (Spec, error) {
		return Spec{}, &specError{spec: s, reason: fmt.Sprintf(format, args...)}
	}
	if text == "" {
		return fail("empty; %s", expected)
	}
	name, arg, ok := strings.Cut(text, ":")
	if !ok {
		return fail(`missing ":" after the source; %s`, expected)
	}
	switch name {
	case "header":
		return parseHeader(arg, fail)
	case "ce":
		return parseCE(arg, fail)
	case "path":
		return parsePath(arg, fail)
	case "query":
		return parseQuery(arg, fail)
	default:
		return fail("unknown source %q; %s", name, expected)
	}
}

// MustParse is Parse for specs known at compile time; it panics on error.
func MustParse(s string) Spec {
	spec, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return spec
}

// String returns the canonical text of s, the form Parse accepts; "" for
// the zero Spec.
func (s Spec) String() string {
	switch s.src {
	case srcHeader:
		return "header:" + s.arg
	case srcCE:
		return "ce:" + s.arg
	case srcPath:
		return "path:" + s.arg
	case srcQuery:
		return "query:" + s.arg
	default:
		return ""
	}
}

// IsZero reports whether s is the zero Spec (nothing configured).
func (s Spec) IsZero() bool { return s.src == srcNone }

// IsCloudEvent reports whether s reads a CloudEvents attribute (a ce:
// spec). The agent uses it to choose FromEvent over FromRequest.
func (s Spec) IsCloudEvent() bool { return s.src == srcCE }

// Resolve returns the spec to extract with: configured when it is set (not
// nil and not zero), otherwise DefaultCloudEventSpec for CloudEvents and
// DefaultHTTPSpec for other requests. Both call sites must compute
// isCloudEvent with IsCloudEventRequest, so that they pick the same default
// for the same request.
func Resolve(configured *Spec, isCloudEvent bool) Spec {
	switch {
	case configured != nil && !configured.IsZero():
		return *configured
	case isCloudEvent:
		return defaultCloudEvent
	default:
		return defaultHTTP
	}
}

// removedHeaders are headers a header: spec may not name because the
// request does not reach the pod with the value the activator saw: Go keeps
// Host out of Request.Header, reverse proxies drop hop-by-hop headers
// (RFC 9110 section 7.6.1) and append to the forwarding headers. Keying on
// them would make the activator and the agent compute different keys.
var removedHeaders = map[string]string{
	"Host":                "Go moves it out of the request headers",
	"Connection":          "it is a hop-by-hop header that proxies remove",
	"Keep-Alive":          "it is a hop-by-hop header that proxies remove",
	"Proxy-Connection":    "it is a hop-by-hop header that proxies remove",
	"Proxy-Authenticate":  "it is a hop-by-hop header that proxies remove",
	"Proxy-Authorization": "it is a hop-by-hop header that proxies remove",
	"Te":                  "it is a hop-by-hop header that proxies remove",
	"Trailer":             "it is a hop-by-hop header that proxies remove",
	"Transfer-Encoding":   "it is a hop-by-hop header that proxies remove",
	"Upgrade":             "it is a hop-by-hop header that proxies remove",
	"Forwarded":           "proxies rewrite it on the way to the pod",
	"X-Forwarded-For":     "proxies rewrite it on the way to the pod",
}

type failFunc func(format string, args ...any) (Spec, error)

func parseHeader(name string, fail failFunc) (Spec, error) {
	if name == "" {
		return fail("header name is empty; expected header:NAME, e.g. %s", DefaultHTTPSpec)
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fail("header name %q contains %q; a header name is letters, digits and !#$%%&'*+-.^_`|~", name, name[i])
		}
	}
	canonical := textproto.CanonicalMIMEHeaderKey(name)
	if why, ok := removedHeaders[canonical]; ok {
		return fail("header %q cannot carry the key: %s", canonical, why)
	}
	return Spec{src: srcHeader, arg: canonical}, nil
}

// isTokenChar reports whether c is an RFC 9110 tchar, the characters of a
// header field name.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// maxCEAttrLen is the CloudEvents spec's length limit for attribute names.
const maxCEAttrLen = 20

// unusableCEAttrs are CloudEvents context attributes (v1.0 and v0.3) that
// cannot be an entity key, with the reason.
var unusableCEAttrs = map[string]string{
	"id":                  "it is unique per event, so every event would be its own entity",
	"specversion":         "it is the same for every event",
	"datacontenttype":     "it describes the payload, not an entity",
	"datacontentencoding": "it describes the payload, not an entity",
	"dataschema":          "it describes the payload, not an entity",
	"schemaurl":           "it describes the payload, not an entity",
	"time":                "it is a timestamp, not an entity",
	"data":                "it is the payload, not an attribute",
}

func parseCE(name string, fail failFunc) (Spec, error) {
	if name == "" || len(name) > maxCEAttrLen || strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fail("CloudEvents attribute name %q must be 1 to %d lowercase letters or digits (CloudEvents naming rules), e.g. %s",
			name, maxCEAttrLen, DefaultCloudEventSpec)
	}
	if why, ok := unusableCEAttrs[name]; ok {
		return fail("CloudEvents attribute %q cannot be an entity key: %s; use ce:subject, ce:partitionkey or another extension", name, why)
	}
	attr := ceExtension
	switch name {
	case "subject":
		attr = ceSubject
	case "type":
		attr = ceType
	case "source":
		attr = ceSource
	}
	// A lowercase alphanumeric name canonicalizes to "Ce-" + Title, which is
	// also what sdk-go writes and looks up for both attributes and
	// extensions.
	return Spec{src: srcCE, arg: name, attr: attr, ceHeader: textproto.CanonicalMIMEHeaderKey("ce-" + name)}, nil
}

// keySegment is the placeholder of a path template.
const keySegment = "{key}"

func parsePath(tmpl string, fail failFunc) (Spec, error) {
	if !strings.HasPrefix(tmpl, "/") {
		return fail(`path template must start with "/", e.g. path:/carts/{key}`)
	}
	keys := 0
	for rest := tmpl[1:]; ; {
		seg, more, found := strings.Cut(rest, "/")
		switch {
		case seg == "":
			return fail(`path template has an empty segment ("//" or a trailing "/"); segments are literals or {key}`)
		case seg == keySegment:
			keys++
		default:
			for i := 0; i < len(seg); i++ {
				if !isLiteralPathChar(seg[i]) {
					return fail("path template segment %q contains %q; a segment is exactly {key} or a literal of letters, digits and -._~!$&'()*+,;=:@", seg, seg[i])
				}
			}
		}
		if !found {
			break
		}
		rest = more
	}
	if keys != 1 {
		return fail("path template must contain exactly one {key} segment, found %d", keys)
	}
	return Spec{src: srcPath, arg: tmpl}, nil
}

// isLiteralPathChar reports whether c may appear in a literal template
// segment: RFC 3986 pchar without '%', so a literal never needs unescaping
// and compares directly against unescaped request segments.
func isLiteralPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0
}

func parseQuery(name string, fail failFunc) (Spec, error) {
	if name == "" {
		return fail("query parameter name is empty; expected query:NAME")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			return fail("query parameter name %q contains %q; a name is letters, digits and -._~", name, c)
		}
	}
	return Spec{src: srcQuery, arg: name}, nil
}
