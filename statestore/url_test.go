package statestore

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    redis.UniversalOptions
		kind    deployment
		wantTLS bool
	}{{
		url:  "redis://localhost",
		want: redis.UniversalOptions{Addrs: []string{"localhost:6379"}},
	}, {
		url:  "redis://:pw@redis.kstate-system:6380/2",
		want: redis.UniversalOptions{Addrs: []string{"redis.kstate-system:6380"}, Password: "pw", DB: 2},
	}, {
		url:  "redis://agent:p%40ss%3Aword@h/",
		want: redis.UniversalOptions{Addrs: []string{"h:6379"}, Username: "agent", Password: "p@ss:word"},
	}, {
		url:     "rediss://h:6390",
		want:    redis.UniversalOptions{Addrs: []string{"h:6390"}},
		wantTLS: true,
	}, {
		url:  "redis://[::1]",
		want: redis.UniversalOptions{Addrs: []string{"[::1]:6379"}},
	}, {
		url:  "redis://[::1]:7000?dial_timeout=2s&read_timeout=500ms&write_timeout=1s&pool_size=20",
		want: redis.UniversalOptions{Addrs: []string{"[::1]:7000"}, DialTimeout: 2 * time.Second, ReadTimeout: 500 * time.Millisecond, WriteTimeout: time.Second, PoolSize: 20},
	}, {
		url:  "redis+sentinel://:pw@s1,s2:26380/mymaster/3?sentinel_password=sp",
		want: redis.UniversalOptions{Addrs: []string{"s1:26379", "s2:26380"}, MasterName: "mymaster", DB: 3, Password: "pw", SentinelPassword: "sp"},
		kind: sentinel,
	}, {
		url:  "redis+sentinel://s1/mymaster",
		want: redis.UniversalOptions{Addrs: []string{"s1:26379"}, MasterName: "mymaster"},
		kind: sentinel,
	}, {
		url:  "redis+cluster://h1:7000,h2:7001,h3",
		want: redis.UniversalOptions{Addrs: []string{"h1:7000", "h2:7001", "h3:6379"}},
		kind: cluster,
	}, {
		url:     "rediss+cluster://:pw@h1:7000",
		want:    redis.UniversalOptions{Addrs: []string{"h1:7000"}, Password: "pw"},
		kind:    cluster,
		wantTLS: true,
	}}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, kind, err := parseURL(tc.url)
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if diff := cmp.Diff(&tc.want, got, cmpopts.IgnoreFields(redis.UniversalOptions{}, "TLSConfig")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if kind != tc.kind {
				t.Errorf("deployment = %v, want %v", kind, tc.kind)
			}
			if gotTLS := got.TLSConfig != nil; gotTLS != tc.wantTLS {
				t.Errorf("TLS = %v, want %v", gotTLS, tc.wantTLS)
			} else if gotTLS && (got.TLSConfig.MinVersion != tls.VersionTLS12 || got.TLSConfig.ServerName != "") {
				t.Errorf("TLSConfig = %+v, want TLS 1.2+ with the server name taken from each dialed host", got.TLSConfig)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://h", "scheme must be one of redis, rediss, redis+sentinel, redis+cluster"},
		{"h:6379", "scheme must be one of"},
		{"redis://", "empty host"},
		{"redis://h1,h2", "scheme redis takes one host, got 2"},
		{"redis://h/abc", `database must be a non-negative integer, got "abc"`},
		{"redis://h/-1", "database must be a non-negative integer"},
		{"redis://h/1/2", `path must be empty or a database number, got "/1/2"`},
		{"redis://h:99999", "port must be 1-65535"},
		{"redis://h:x", "port must be 1-65535"},
		{"redis://::1", "IPv6 needs brackets"},
		{"redis+sentinel://s1", "path must name the Sentinel master"},
		{"redis+sentinel://s1/m/0/1", "path must name the Sentinel master"},
		{"redis+cluster://h/0", "a Redis Cluster has no databases"},
		{"redis://h?foo=1", `unknown parameter "foo"; known parameters: dial_timeout`},
		{"redis://h?dial_timeout=soon", `dial_timeout must be a positive duration such as 2s, got "soon"`},
		{"redis://h?pool_size=0", "pool_size must be a positive integer"},
		{"redis://h?sentinel_password=x", "sentinel_password is only valid with redis+sentinel"},
		{"redis://hunter2@h", "has no password; write user:password@ or :password@"},
		{"redis://:hunter2%zz@h", "not valid percent-encoding"},
		{"redis://:hunter2@h:bad", "port must be 1-65535"},
		{"redis+sentinel://:hunter2@s/m?sentinel_password=hunter2&x=1", "unknown parameter"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			_, err := ParseURL(tc.url)
			if err == nil {
				t.Fatal("ParseURL succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "store URL ") {
				t.Errorf("error %q does not start with \"store URL \"", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://h:6379", "redis://h:6379"},
		{"redis://:secret@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"redis://user:secret@h", "redis://user:xxxxx@h"},
		{"redis://secret@h", "redis://:xxxxx@h"},
		{"redis://:p@ss@h", "redis://:xxxxx@h"},
		{"redis+sentinel://:pw@a,b/m?dial_timeout=1s&sentinel_password=sp", "redis+sentinel://:xxxxx@a,b/m?dial_timeout=1s&sentinel_password=xxxxx"},
		{"redis://h?sentinel_password=sp", "redis://h?sentinel_password=xxxxx"},
		{"pw@host", ":xxxxx@host"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := Redacted(tc.in); got != tc.want {
			t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
