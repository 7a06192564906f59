#!/usr/bin/env bash
# Scale-to-zero demo, in dev mode: drive an example, let it scale to zero,
# come back, and show that the state is intact and the first request after
# zero was served from memory (preloaded), not from Redis.
#   hack/demo-scale-to-zero.sh counter|cart|visitors|join [ADDR]
set -euo pipefail
example=${1:?usage: $0 counter|cart|visitors|join [ADDR]}
addr=${2:-127.0.0.1:8090}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/kn-kstate
log=$(mktemp)
go build -o "$bin" ./cmd/kn-kstate
"$bin" dev --example "$example" --addr "$addr" --replicas 2 --scale-to-zero-after 4s --status-every 0 >"$log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; echo "--- dev output ---"; cat "$log"' EXIT

n=0
event() { # type key [json]
  n=$((n + 1))
  curl -sS "http://$addr/" -H 'Ce-Specversion: 1.0' -H "Ce-Id: demo-$$-$n" -H 'Ce-Source: /demo' \
    -H "Ce-Type: $1" -H "Ce-Partitionkey: $2" ${3:+-H 'Content-Type: application/json' -d "$3"}
  echo
}
status() { curl -sS "http://$addr/.kstate/dev/status"; }
field() { status | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
replicas() { status | grep -o '"replicas":\[[^]]*\]'; }

for _ in $(seq 1 100); do curl -s "http://$addr/.kstate/dev/status" >/dev/null 2>&1 && break; sleep 0.1; done
echo "== driving $example"
case $example in
  counter) for i in 1 2 3; do event counter.add alice '{"by": 2}' >/dev/null; done; read() { event counter.get alice; } ;;
  cart) event com.example.cart.ItemAdded cart-1 '{"sku": "apple", "quantity": 3, "price_cents": 50}' >/dev/null
        event com.example.cart.ItemAdded cart-1 '{"sku": "pear", "quantity": 1, "price_cents": 80}' >/dev/null
        read() { event com.example.cart.Get cart-1; } ;;
  visitors) for i in $(seq 1 300); do event com.example.page.Viewed home "{\"visitor\": \"v$((i % 120))\"}" >/dev/null; done
        read() { event com.example.page.Count home; } ;;
  join) event com.example.sensor.Reading device-1 '{"sensor": "temp", "value": 21.5, "ts": "2024-05-01T12:00:00Z"}' >/dev/null
        event com.example.sensor.Reading device-1 '{"sensor": "humidity", "value": 40, "ts": "2024-05-01T12:00:02Z"}' >/dev/null
        read() { event com.example.sensor.Status device-1; } ;;
  *) echo "unknown example $example" >&2; exit 2 ;;
esac
before=$(read)
echo "state before: $before"
echo "== waiting for scale to zero ($(replicas))"
until replicas | grep -q '\[\]'; do sleep 0.2; done
echo "scaled to zero: $(replicas)"
misses=$(field cacheMisses); hits=$(field cacheHits)
after=$(read)
echo "state after:  $after"
echo "replicas now: $(replicas); cache hits +$(( $(field cacheHits) - hits )), misses +$(( $(field cacheMisses) - misses ))"
if [ "$before" = "$after" ] && [ "$(field cacheMisses)" = "$misses" ]; then
  echo "OK: state intact across scale to zero, and the first request after it was served from memory"
else
  echo "FAIL: state changed or the first request missed the cache" >&2
  exit 1
fi
