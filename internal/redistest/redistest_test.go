package redistest

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func client(t *testing.T, s *Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestKillRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	s := Start(t)
	c := client(t, s)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	addr := s.Addr()

	s.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING after Kill succeeded, want an error")
	}

	s.Restart()
	if got := s.Addr(); got != addr {
		t.Errorf("Addr after Restart = %s, want %s", got, addr)
	}
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("GET after Kill+Restart = %q, %v; want \"v\" (AOF replay)", got, err)
	}
}

func TestStopRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	s := Start(t)
	c := client(t, s)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Stop()
	s.Stop() // stopping a stopped server is a no-op
	s.Restart()
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET after Stop+Restart = %q, %v; want \"v\"", got, err)
	}
}

func TestWipeEmpties(t *testing.T) {
	ctx := context.Background()
	s := Start(t)
	c := client(t, s)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Wipe()
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after Wipe: err = %v, want redis.Nil", err)
	}
	// Still durable after a wipe: the new AOF is written to the same dir.
	if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Kill()
	s.Restart()
	if got, err := c.Get(ctx, "k2").Result(); err != nil || got != "v2" {
		t.Fatalf("GET after Wipe+Kill+Restart = %q, %v; want \"v2\"", got, err)
	}
}

func TestProductionConfig(t *testing.T) {
	ctx := context.Background()
	c := client(t, Start(t))
	want := map[string]string{"appendonly": "yes", "appendfsync": "always", "save": "", "bind": "127.0.0.1"}
	for k, v := range want {
		got, err := c.ConfigGet(ctx, k).Result()
		if err != nil {
			t.Fatalf("CONFIG GET %s: %v", k, err)
		}
		if got[k] != v {
			t.Errorf("CONFIG GET %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestWithArgs(t *testing.T) {
	s := Start(t, WithArgs("--requirepass", "s3cret"))
	c := client(t, s)
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Error("PING without password succeeded, want NOAUTH")
	}
	a := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: "s3cret"})
	defer a.Close()
	if err := a.Ping(context.Background()).Err(); err != nil {
		t.Errorf("PING with password: %v", err)
	}
}

func TestTwoServersDistinct(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
}

func TestShared(t *testing.T) {
	t.Setenv(EnvURL, "redis://example.invalid:1")
	if got := Shared(t); got != "redis://example.invalid:1" {
		t.Errorf("Shared with %s set = %q, want the env value", EnvURL, got)
	}
	t.Setenv(EnvURL, "")
	u := Shared(t)
	if !regexp.MustCompile(`^redis://127\.0\.0\.1:\d+$`).MatchString(u) {
		t.Errorf("Shared without %s = %q, want a private redis://127.0.0.1:PORT", EnvURL, u)
	}
}

func TestUniqueSpace(t *testing.T) {
	t.Run("sub/with {braces} and spaces", func(t *testing.T) {
		a, b := UniqueSpace(t), UniqueSpace(t)
		if a == b {
			t.Fatalf("UniqueSpace returned %q twice", a)
		}
		re := regexp.MustCompile(`^test-[0-9a-f]{12}/[A-Za-z0-9._-]+$`)
		for _, s := range []string{a, b} {
			if !re.MatchString(s) {
				t.Errorf("UniqueSpace = %q, want it to match %s", s, re)
			}
		}
	})
}

func TestStartCluster(t *testing.T) {
	ctx := context.Background()
	nodes, url := StartCluster(t, 3)
	if len(nodes) != 3 || !regexp.MustCompile(`^redis\+cluster://127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$`).MatchString(url) {
		t.Fatalf("StartCluster = %d nodes, %q", len(nodes), url)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr()}})
	defer c.Close()
	// Keys spread over all three masters: each must accept its share.
	for i := range 30 {
		if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatalf("SET on the cluster: %v", err)
		}
	}
	for _, n := range nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		if size, err := nc.DBSize(ctx).Result(); err != nil || size == 0 {
			t.Errorf("node %s holds %d keys (%v), want some", n.Addr(), size, err)
		}
		nc.Close()
	}
}
