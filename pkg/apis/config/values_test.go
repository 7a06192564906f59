package config

import (
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1048576", want: 1 << 20},
		{in: "64Mi", want: 64 << 20},
		{in: " 1G ", want: 1000000000},
		{in: "0.5Ki", want: 512},
		{in: "0", wantErr: `"0" is not a byte size: want a whole number of bytes of at least 1, such as 64Mi`},
		{in: "1.5", wantErr: `"1.5" is not a byte size: want a whole number of bytes of at least 1, such as 64Mi`},
		{in: "-1Mi", wantErr: `"-1Mi" is not a byte size: want a whole number of bytes of at least 1, such as 64Mi`},
		{in: "100m", wantErr: `"100m" is not a byte size: want a whole number of bytes of at least 1, such as 64Mi`},
		{in: "64MB", wantErr: `"64MB" is not a byte size: want a quantity such as 64Mi or 1048576`},
		{in: "", wantErr: `"" is not a byte size: want a quantity such as 64Mi or 1048576`},
	}
	for _, tc := range tests {
		got, err := ParseBytes(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseBytes(%q) error = %v, want %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePreload(t *testing.T) {
	base := Preload{Entities: 10, Bytes: 20}
	tests := []struct {
		in      string
		want    Preload
		wantErr string
	}{
		{in: "entities=100000,bytes=128Mi", want: Preload{Entities: 100000, Bytes: 128 << 20}},
		{in: " bytes = 1Ki , entities = 5 ", want: Preload{Entities: 5, Bytes: 1024}},
		{in: "entities=7", want: Preload{Entities: 7, Bytes: 20}},
		{in: "bytes=1Mi", want: Preload{Entities: 10, Bytes: 1 << 20}},
		{in: "", wantErr: `"" is not a preload budget: want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi`},
		{in: "entities=1,memory=1Mi", wantErr: `"entities=1,memory=1Mi" is not a preload budget: unknown part "memory=1Mi"; want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi`},
		{in: "100000", wantErr: `"100000" is not a preload budget: unknown part "100000"; want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi`},
		{in: "entities=1,entities=2", wantErr: `"entities=1,entities=2" is not a preload budget: entities is given twice; want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi`},
		{in: "entities=-3", wantErr: `"entities=-3" is not a preload budget: entities=-3 is not an integer of at least 1`},
		{in: "bytes=lots", wantErr: `"bytes=lots" is not a preload budget: bytes: "lots" is not a byte size: want a quantity such as 64Mi or 1048576`},
	}
	for _, tc := range tests {
		got, err := ParsePreload(tc.in, base)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParsePreload(%q) error = %v\nwant %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePreload(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	// String is the syntax ParsePreload reads.
	p := Preload{Entities: 100000, Bytes: 128 << 20}
	if s := p.String(); s != "entities=100000,bytes=128Mi" {
		t.Errorf("String() = %q", s)
	}
	if back, err := ParsePreload(p.String(), Preload{}); err != nil || back != p {
		t.Errorf("ParsePreload(String()) = %+v, %v; want %+v", back, err, p)
	}
}

func TestParseStoreRef(t *testing.T) {
	tests := []struct {
		in      string
		want    StoreRef
		wantErr string
	}{
		{in: "kstate-store", want: StoreRef{SecretName: "kstate-store", Key: "url"}},
		{in: " redis.creds:REDIS_URL ", want: StoreRef{SecretName: "redis.creds", Key: "REDIS_URL"}},
		{in: "ns/creds", wantErr: `"ns/creds" is not a store Secret: a Secret of another namespace cannot be used; want SECRET or SECRET:KEY naming a Secret in the Service's namespace`},
		{in: "", wantErr: `"" is not a store Secret: no Secret name; want SECRET or SECRET:KEY`},
		{in: "Creds", wantErr: `"Creds" is not a store Secret: the Secret name "Creds" is invalid (a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')); want SECRET or SECRET:KEY`},
		{in: "creds:", wantErr: `"creds:" is not a store Secret: the key "" is invalid (a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')); want SECRET or SECRET:KEY`},
	}
	for _, tc := range tests {
		got, err := ParseStoreRef(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseStoreRef(%q) error = %v\nwant %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseStoreRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, err := ParseStoreRef(got.String()); err != nil || back != got {
			t.Errorf("ParseStoreRef(%q.String()) = %+v, %v", tc.in, back, err)
		}
	}
}

func TestParseScalars(t *testing.T) {
	if d, err := ParseDurability(" sync "); err != nil || d != DurabilitySync {
		t.Errorf("ParseDurability(sync) = %q, %v", d, err)
	}
	if _, err := ParseDurability("Async"); err == nil {
		t.Error(`ParseDurability("Async") succeeded; only the exact spelling is accepted`)
	}
	if d, err := ParseFlushInterval("1m"); err != nil || d != time.Minute {
		t.Errorf("ParseFlushInterval(1m) = %v, %v", d, err)
	}
	if _, err := ParseFlushInterval("61s"); err == nil {
		t.Error("ParseFlushInterval(61s) succeeded")
	}
	if d, err := ParseDrainTimeout("25s"); err != nil || d != 25*time.Second {
		t.Errorf("ParseDrainTimeout(25s) = %v, %v", d, err)
	}
	if _, err := ParseDrainTimeout("500ms"); err == nil {
		t.Error("ParseDrainTimeout(500ms) succeeded")
	}
	for in, want := range map[string]int{"1": 1, "1024": 1024, " 32 ": 32} {
		if n, err := ParseDedupWindow(in); err != nil || n != want {
			t.Errorf("ParseDedupWindow(%q) = %d, %v", in, n, err)
		}
	}
	for _, in := range []string{"0", "1025", "x", "1.5"} {
		if _, err := ParseDedupWindow(in); err == nil {
			t.Errorf("ParseDedupWindow(%q) succeeded", in)
		}
	}
}
