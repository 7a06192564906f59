#!/usr/bin/env bash
# Benchmarks of the state engine, each against its baseline in the same run:
#   - the warm hit path (ns/op, allocs);
#   - a warm key through the whole agent (HTTP, gRPC function, write-behind)
#     against a stateless handler doing a Redis GET+SET per request, on the
#     same redis-server: p50/p99 ratio and Redis operations per request;
#   - flush throughput against a bare pipelined EVALSHA loop of the same script.
# Needs redis-server on PATH. Redis is on loopback here, which flatters the
# stateless baseline; the benchmarks issue adds network delay.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_N:-5000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'BenchmarkWarmHit$' -benchmem ./pkg/agent/ | tee -a "$out"
go test -run '^$' -bench 'BenchmarkWarmKeyVsStateless' -benchtime "${n}x" ./pkg/agent/ | tee -a "$out"
go test -run '^$' -bench 'BenchmarkFlushVsBare' -benchtime 3s ./statestore/ | tee -a "$out"

metric() { # benchmark-name-prefix metric-unit
  awk -v b="$1" -v u="$2" '$1 ~ "^"b { for (i = 2; i < NF; i++) if ($(i+1) == u) { print $i; exit } }' "$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
k50=$(metric 'BenchmarkWarmKeyVsStateless/kstate' p50-ns); s50=$(metric 'BenchmarkWarmKeyVsStateless/stateless' p50-ns)
k99=$(metric 'BenchmarkWarmKeyVsStateless/kstate' p99-ns); s99=$(metric 'BenchmarkWarmKeyVsStateless/stateless' p99-ns)
kops=$(metric 'BenchmarkWarmKeyVsStateless/kstate' redis-ops/req); sops=$(metric 'BenchmarkWarmKeyVsStateless/stateless' redis-ops/req)
echo
echo "| measure | kstate | baseline | ratio | goal |"
echo "| --- | --- | --- | --- | --- |"
echo "| warm key p50 (ns) | $k50 | $s50 (stateless GET+SET) | $(ratio "$k50" "$s50") | <= 0.5 |"
echo "| warm key p99 (ns) | $k99 | $s99 | $(ratio "$k99" "$s99") | |"
echo "| Redis ops per request | $kops | $sops | | <= 0.05 |"
grep -E 'BenchmarkFlushVsBare' "$out" | sed 's/^/flush vs bare EVALSHA: /'
grep -E '^BenchmarkWarmHit' "$out" | sed 's/^/warm hit path: /'
