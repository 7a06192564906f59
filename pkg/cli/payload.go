package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Payload is opaque bytes (an entity's state, a reply body) shown the most
// readable way: as JSON when they parse as JSON, as text when they are
// printable UTF-8, else base64. Exactly one field is set.
type Payload struct {
	JSON   json.RawMessage `json:"json,omitempty"`
	Text   *string         `json:"text,omitempty"`
	Base64 string          `json:"base64,omitempty"`
}

// newPayload returns nil for empty b.
func newPayload(b []byte) *Payload {
	switch {
	case len(b) == 0:
		return nil
	case json.Valid(b):
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err == nil {
			return &Payload{JSON: compact.Bytes()}
		}
		return &Payload{JSON: append(json.RawMessage(nil), b...)}
	case printable(b):
		return &Payload{Text: ptr(string(b))}
	default:
		return &Payload{Base64: base64.StdEncoding.EncodeToString(b)}
	}
}

// String renders p for a table: indented JSON, a Go-quoted string, or
// "base64:…".
func (p *Payload) String() string {
	switch {
	case p == nil:
		return "(empty)"
	case p.JSON != nil:
		var out bytes.Buffer
		if err := json.Indent(&out, p.JSON, "", "  "); err != nil {
			return string(p.JSON)
		}
		return out.String()
	case p.Text != nil:
		return strconv.Quote(*p.Text)
	default:
		return "base64:" + p.Base64
	}
}

// printable reports whether b is UTF-8 text without control characters
// other than tab, newline and carriage return.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}
