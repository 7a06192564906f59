#!/usr/bin/env bash
# Scale-to-zero demo: drive an example, let it scale to zero, come back, and
# show that the state is intact and the first request after zero was served
# from memory (preloaded), not from Redis.
#
#   hack/demo-scale-to-zero.sh counter|cart|visitors|join [ADDR]
#       in dev mode (kn kstate dev, embedded store), on ADDR (default 127.0.0.1:8090)
#   sudo hack/demo-scale-to-zero.sh --cluster counter|cart|visitors|join
#       on the e2e cluster (hack/cluster: brought up and kstate installed
#       when needed): the example's own service.yaml with its image, in the
#       namespace kstate-demo-EXAMPLE, with a private redis-server; it
#       deletes both at the end (KEEP=1 keeps them; KSTATE_DEMO_NO_UP=1 skips
#       up.sh and install-kstate.sh, for a cluster known to be up, as in
#       test/e2e).
# It exits non-zero if the state changed or the first request missed.
set -euo pipefail
cluster=0
if [ "${1:-}" = --cluster ]; then
  cluster=1
  shift
fi
example=${1:?usage: $0 [--cluster] counter|cart|visitors|join [ADDR]}
case $example in counter | cart | visitors | join) ;; *) echo "unknown example $example" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)

if ((cluster)); then
  source hack/cluster/lib.sh
  if [ "${KSTATE_DEMO_NO_UP:-0}" != 1 ]; then
    hack/cluster/up.sh >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; die "the cluster did not come up"; }
    hack/cluster/install-kstate.sh >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; die "kstate did not install"; }
  fi
  ns=kstate-demo-$example
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('$NODE_IP', 0)); print(s.getsockname()[1])")
  redis-server --bind "$NODE_IP" --port "$port" --protected-mode no --appendonly yes --save "" \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize yes --pidfile "$tmp/redis.pid"
  cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then
      kc delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
      kill "$(cat "$tmp/redis.pid")" 2>/dev/null || true
    else
      echo "KEEP=1: namespace $ns and redis-server on $NODE_IP:$port (pid $(cat "$tmp/redis.pid")) kept"
    fi
  }
  trap cleanup EXIT
  kc delete namespace "$ns" --wait=true --ignore-not-found >/dev/null
  kc create namespace "$ns" >/dev/null
  kc -n "$ns" create secret generic kstate-store --from-literal=url="redis://$NODE_IP:$port" >/dev/null
  # The example's manifest as is, its ko:// image resolved, and a 6 s
  # autoscaling window so that the demo does not wait a minute for zero.
  sed -e "s#ko://github.com/kstate-dev/kstate/examples/$example/cmd/$example#$(cat "$IMAGES/$example.ref")#" \
    -e 's#^\(\s*\)kstate.dev/enabled: "true"#&\n\1autoscaling.knative.dev/window: "6s"#' \
    "examples/$example/service.yaml" | kc -n "$ns" apply -f - >/dev/null
  kc -n "$ns" wait --for=condition=Ready "ksvc/$example" --timeout=180s >/dev/null
  url=http://$INGRESS_ADDR
  host=$(kc -n "$ns" get ksvc "$example" -o jsonpath='{.status.url}' | sed 's#^https\?://##')
  echo "== $example on the cluster: namespace $ns, Redis $NODE_IP:$port, Host $host via $INGRESS_ADDR"
  pods() { kc -n "$ns" get pods -l "serving.knative.dev/service=$example" -o name | sed 's#pod/##'; }
  replicas() { echo "[$(pods | tr '\n' ' ' | sed 's/ $//')]"; }
  # The agents' cache counters, summed over the Service's pods.
  field() {
    local p sum=0 v
    for p in $(pods); do
      v=$(kc get --raw "/api/v1/namespaces/$ns/pods/$p:8080/proxy/.kstate/stats" 2>/dev/null | grep -o "\"$1\":\"[0-9]*\"" | tr -dc 0-9)
      sum=$((sum + ${v:-0}))
    done
    echo "$sum"
  }
  zero() { [ -z "$(pods)" ]; }
else
  addr=${2:-127.0.0.1:8090}
  url=http://$addr
  host=""
  bin=$tmp/kn-kstate
  go build -o "$bin" ./cmd/kn-kstate
  "$bin" dev --example "$example" --addr "$addr" --replicas 2 --scale-to-zero-after 4s --status-every 0 >"$tmp/dev.log" 2>&1 &
  dev=$!
  trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; echo "--- dev output ---"; cat "$tmp/dev.log"' EXIT
  status() { curl -sS "$url/.kstate/dev/status"; }
  field() { status | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
  replicas() { status | grep -o '"replicas":\[[^]]*\]'; }
  zero() { replicas | grep -q '\[\]'; }
  for _ in $(seq 1 100); do curl -s "$url/.kstate/dev/status" >/dev/null 2>&1 && break; sleep 0.1; done
fi

n=0
event() { # type key [json]
  n=$((n + 1))
  curl -sS "$url/" ${host:+-H "Host: $host"} -H 'Ce-Specversion: 1.0' -H "Ce-Id: demo-$$-$n" -H 'Ce-Source: /demo' \
    -H "Ce-Type: $1" -H "Ce-Partitionkey: $2" ${3:+-H 'Content-Type: application/json' -d "$3"}
  echo
}

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
esac
before=$(read)
echo "state before: $before"
echo "== waiting for scale to zero ($(replicas))"
start=$(date +%s)
until zero; do sleep 0.5; done
echo "scaled to zero after $(($(date +%s) - start)) s: $(replicas)"
misses=$(field cacheMisses); hits=$(field cacheHits)
t0=$(date +%s%N)
after=$(read)
echo "state after:  $after (first answer from zero in $((($(date +%s%N) - t0) / 1000000)) ms)"
echo "replicas now: $(replicas); cache hits +$(( $(field cacheHits) - hits )), misses +$(( $(field cacheMisses) - misses ))"
if [ -n "$before" ] && [ "$before" = "$after" ] && [ "$(field cacheMisses)" = "$misses" ]; then
  echo "OK: state intact across scale to zero, and the first request after it was served from memory"
else
  echo "FAIL: state changed or the first request missed the cache" >&2
  exit 1
fi
