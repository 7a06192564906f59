package statestore

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseURL: any string parses or fails without a panic, and neither the
// error nor Redacted shows the password of a URL that has one.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis://localhost", "rediss://:s3cret@h:6380/2?dial_timeout=2s&pool_size=9",
		"redis+sentinel://u:pw@h1,h2:26379/mymaster/1?sentinel_password=x",
		"redis+cluster://:pw@a:1,b:2", "redis://u:p@h/notanumber", "http://h", "redis://:p@[::1", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := ParseURL(raw)
		u, perr := url.Parse(raw)
		if perr != nil || u.User == nil {
			return
		}
		pw, ok := u.User.Password()
		if !ok || len(pw) < 4 || strings.Contains(strings.ReplaceAll(raw, pw, ""), pw) {
			return // short passwords can appear by chance elsewhere in the text
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("ParseURL(%q) error shows the password: %v", raw, err)
		}
		if red := Redacted(raw); strings.Contains(red, pw) {
			t.Errorf("Redacted(%q) = %q shows the password", raw, red)
		}
	})
}
