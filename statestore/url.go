package statestore

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// deployment is the kind of Redis a store URL names.
type deployment int

const (
	single deployment = iota
	sentinel
	cluster
)

var schemes = map[string]struct {
	kind deployment
	tls  bool
}{
	"redis":           {single, false},
	"rediss":          {single, true},
	"redis+sentinel":  {sentinel, false},
	"rediss+sentinel": {sentinel, true},
	"redis+cluster":   {cluster, false},
	"rediss+cluster":  {cluster, true},
}

// queryParams are the URL parameters ParseURL understands.
var queryParams = []string{"dial_timeout", "pool_size", "read_timeout", "sentinel_password", "write_timeout"}

// ParseURL parses a store URL into go-redis options. The forms are:
//
//	redis://[[user]:password@]host[:6379][/db]
//	rediss://…                                  (the same, over TLS)
//	redis+sentinel://[[user]:password@]h1[:26379],h2…/master[/db]
//	redis+cluster://[[user]:password@]h1[:6379],h2…   (seed nodes; no db)
//	rediss+sentinel://…, rediss+cluster://…     (TLS)
//
// The password authenticates to Redis itself (for Sentinel: to the master
// and replicas). Optional query parameters: dial_timeout, read_timeout,
// write_timeout (Go durations, e.g. 2s), pool_size, and sentinel_password
// (Sentinel only). Errors and Redacted never show passwords.
//
// A cluster URL with a single seed node gives options that
// redis.NewUniversalClient would take for a single node; NewRedis knows the
// scheme and makes a cluster client.
func ParseURL(raw string) (*redis.UniversalOptions, error) {
	o, _, err := parseURL(raw)
	return o, err
}

func parseURL(raw string) (*redis.UniversalOptions, deployment, error) {
	bad := func(format string, args ...any) (*redis.UniversalOptions, deployment, error) {
		return nil, 0, fmt.Errorf("store URL %q: %s", Redacted(raw), fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	s, known := schemes[scheme]
	if !ok || !known {
		return bad("scheme must be one of redis, rediss, redis+sentinel, redis+cluster (rediss+sentinel, rediss+cluster for TLS)")
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")

	o := &redis.UniversalOptions{}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		user, pass, hasPass := strings.Cut(authority[:i], ":")
		if !hasPass {
			return bad("the user info has no password; write user:password@ or :password@")
		}
		var err1, err2 error
		o.Username, err1 = url.PathUnescape(user)
		o.Password, err2 = url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			// The unescape error would quote the password.
			return bad("the user info is not valid percent-encoding")
		}
		authority = authority[i+1:]
	}

	defaultPort := "6379"
	if s.kind == sentinel {
		defaultPort = "26379"
	}
	for _, h := range strings.Split(authority, ",") {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return bad("%v", err)
		}
		o.Addrs = append(o.Addrs, addr)
	}
	if s.kind == single && len(o.Addrs) > 1 {
		return bad("scheme %s takes one host, got %d; use redis+cluster or redis+sentinel for several", scheme, len(o.Addrs))
	}

	segs := strings.Split(path, "/")
	if path == "" {
		segs = nil
	}
	switch s.kind {
	case single:
		if len(segs) > 1 {
			return bad("path must be empty or a database number, got %q", "/"+path)
		}
	case sentinel:
		if len(segs) == 0 || segs[0] == "" || len(segs) > 2 {
			return bad("path must name the Sentinel master and optionally a database: /mymaster[/db], got %q", "/"+path)
		}
		o.MasterName, segs = segs[0], segs[1:]
	case cluster:
		if len(segs) > 0 {
			return bad("a Redis Cluster has no databases; remove the path %q", "/"+path)
		}
	}
	if len(segs) == 1 {
		db, err := strconv.Atoi(segs[0])
		if err != nil || db < 0 {
			return bad("database must be a non-negative integer, got %q", segs[0])
		}
		o.DB = db
	}

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return bad("query is not valid URL encoding")
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := q.Get(k)
		switch k {
		case "dial_timeout", "read_timeout", "write_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad("%s must be a positive duration such as 2s, got %q", k, v)
			}
			switch k {
			case "dial_timeout":
				o.DialTimeout = d
			case "read_timeout":
				o.ReadTimeout = d
			default:
				o.WriteTimeout = d
			}
		case "pool_size":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return bad("pool_size must be a positive integer, got %q", v)
			}
			o.PoolSize = n
		case "sentinel_password":
			if s.kind != sentinel {
				return bad("sentinel_password is only valid with redis+sentinel")
			}
			o.SentinelPassword = v
		default:
			return bad("unknown parameter %q; known parameters: %s", k, strings.Join(queryParams, ", "))
		}
	}

	if s.tls {
		// ServerName stays empty so crypto/tls checks each node's certificate
		// against the host it dials (cluster and sentinel have several).
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, s.kind, nil
}

func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host; want host[:port]")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port given ("host" or "[::1]"): add the default one.
		if host, port, err = net.SplitHostPort(h + ":" + defaultPort); err != nil {
			return "", fmt.Errorf("host %q is not host[:port] (IPv6 needs brackets: [::1]:6379)", h)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: port must be 1-65535, got %q", h, port)
	}
	if host == "" {
		return "", fmt.Errorf("host %q has no host name", h)
	}
	return net.JoinHostPort(host, port), nil
}

// Redacted returns the store URL with its passwords replaced by "xxxxx", for
// logs and error messages.
func Redacted(raw string) string {
	// The authority starts after "//", with or without a scheme before it
	// ("//:pw@host" is a mistyped URL too, and is echoed in errors).
	sep := "://"
	scheme, rest, ok := strings.Cut(raw, sep)
	if !ok {
		sep = "//"
		scheme, rest, ok = strings.Cut(raw, sep)
	}
	if !ok {
		scheme, rest = "", raw
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		user, _, hasPass := strings.Cut(authority[:i], ":")
		if !hasPass {
			user = "" // a lone user info is most likely a misplaced password
		}
		authority = user + ":xxxxx" + authority[i:]
	}
	if path, query, ok := strings.Cut(tail, "?"); ok {
		params := strings.Split(query, "&")
		for i, p := range params {
			if k, _, _ := strings.Cut(p, "="); k == "sentinel_password" {
				params[i] = k + "=xxxxx"
			}
		}
		tail = path + "?" + strings.Join(params, "&")
	}
	if ok {
		return scheme + sep + authority + tail
	}
	return authority + tail
}
