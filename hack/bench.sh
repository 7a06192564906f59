#!/usr/bin/env bash
# kstate's benchmark suite (issue 7; docs/performance.md): runs P1..P7 and
# prints ONE markdown table of results, each against a baseline measured in
# the same run, with the machine, its load average and the delay added to
# Redis.
#   P1  activator throughput with the plugin vs the stock Knative throttler,
#       and the routing decision at 1,000 pods   (activator-plugin benchmarks)
#   P2  warm stateful counter vs a stateless Redis GET+SET handler (test/bench)
#   P3  slot balance and movement vs the ideal and two libraries
#                                                (hack/bench-placement.sh -q)
#   P4  scale-up 2→4 under load vs the steady state before it    (test/bench)
#   P5  scale from zero: preload vs lazy loading vs stateless    (test/bench)
#   P6  flush throughput vs a bare pipelined EVALSHA   (statestore benchmark)
#   P7  drain of 100,000 dirty entities vs the 30 s window       (test/bench)
#
# Environment:
#   BENCH_QUICK=1   a short run (about 1.5 minutes): shorter runs, fewer
#                   repetitions, P3 skipped
#   BENCH_OUT=DIR   where raw outputs, rows and PNG plots go
#                   (default /tmp/kstate-bench-<date>-<time>)
#   KSTATE_BENCH_REDIS_DELAY=250us   the delay added to Redis each way
#                   (P2, P4, P5, P7)
# Needs redis-server on PATH. The full run takes about 5.5 minutes on 2
# cores and uses both: run it on an otherwise quiet machine, and read the
# load average it prints.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
out=${BENCH_OUT:-/tmp/kstate-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/rows-*.tsv

log() { printf '[bench] %s\n' "$*" >&2; }
command -v redis-server >/dev/null 2>&1 || { log "redis-server is not on PATH (apt-get install redis-server)"; exit 1; }

if [ "$quick" = 1 ]; then
  mode=quick benchtime=1s
else
  mode=full benchtime=3s
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
failed_steps=()

# step NAME OUTFILE COMMAND...: runs a step, keeps its output, notes a failure.
step() {
  local name=$1 file=$2
  shift 2
  log "$name: $* (output: $file)"
  local t0=$SECONDS
  if "$@" >"$file" 2>&1; then
    log "$name: done in $((SECONDS - t0))s"
  else
    log "$name: FAILED after $((SECONDS - t0))s; last lines of $file:"
    tail -20 "$file" >&2
    failed_steps+=("$name")
  fi
}

step P1-throughput "$out/p1-throughput.txt" \
  go test -count=1 -run '^$' -bench 'BenchmarkThroughput/cc=/kstate-vs-stock' -benchtime "$benchtime" ./activator-plugin/
step P1-pick "$out/p1-pick.txt" \
  go test -count=1 -run '^$' -bench 'BenchmarkPick' -benchmem -benchtime "$benchtime" ./activator-plugin/affinity/
step P6 "$out/p6-flush.txt" \
  go test -count=1 -run '^$' -bench 'BenchmarkFlushVsBare' -benchtime "$benchtime" ./statestore/
step P2-P4-P5-P7 "$out/test-bench.txt" \
  env KSTATE_BENCH="$mode" BENCH_OUT="$out" KSTATE_REQUIRE_REDIS=1 \
  go test -count=1 -v -timeout 30m -run '^TestP' ./test/bench/
if [ "$quick" != 1 ]; then
  step P3 "$out/placement.md" hack/bench-placement.sh -q
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# metric FILE BENCHMARK UNIT: the value reported with UNIT on the line of
# BENCHMARK (name without the -GOMAXPROCS suffix).
metric() {
  awk -v b="$2" -v u="$3" '{ n = $1; sub(/-[0-9]+$/, "", n) } n == b { for (i = 2; i < NF; i++) if ($(i+1) == u) { print $i; exit } }' "$1" 2>/dev/null
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
yesno() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo '**no**'; fi; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
missing() { row "$1" "$2" "not measured (see $3)" — — "$4" —; }

p1_rows() {
  local f=$out/p1-throughput.txt cc r k s
  for cc in 0 10; do
    r=$(metric "$f" "BenchmarkThroughput/cc=$cc/kstate-vs-stock" throughput-ratio)
    k=$(metric "$f" "BenchmarkThroughput/cc=$cc/kstate-vs-stock" kstate-ns/req)
    s=$(metric "$f" "BenchmarkThroughput/cc=$cc/kstate-vs-stock" stock-ns/req)
    if [ -z "$r" ]; then
      missing P1 "activator throughput with the plugin, containerConcurrency $cc" "$f" "≥ 0.95"
      continue
    fi
    row P1 "activator throughput with the plugin, containerConcurrency $cc (16 workers, 4 backends, 1,000 keys, alternating chunks)" \
      "$(calc '%.0f req/s' "1e9 / $k")" "$(calc '%.0f req/s' "1e9 / $s") (stock throttler)" "$(calc '%.3f' "$r")" "≥ 0.95" "$(yesno "$r >= 0.95")"
  done
  f=$out/p1-pick.txt
  local pick base
  pick=$(metric "$f" "BenchmarkPick/pods=1000" ns/op)
  base=$(metric "$f" "BenchmarkPick/baseline=placement.OwnerOfKey/pods=1000" ns/op)
  if [ -z "$pick" ]; then
    missing P1 "routing decision at 1,000 pods" "$f" "≤ 200 ns"
  else
    row P1 "routing decision at 1,000 pods (Router.Pick)" "$pick ns" "$base ns (placement.OwnerOfKey)" \
      "$(calc '%.2f' "$pick / $base")" "≤ 200 ns" "$(yesno "$pick <= 200")"
  fi
}

# p3 NAME N COLUMN: a cell of the slot-table comparison.
p3() {
  awk -F'|' -v a="$1" -v n="$2" -v c="$3" '
    { name = $2; gsub(/^ +| +$/, "", name) }
    index(name, a) == 1 && $3 + 0 == n { v = $c; gsub(/^ +| +$/, "", v); print v; exit }' "$out/placement.md" 2>/dev/null
}
p3_rows() {
  if [ "$quick" = 1 ]; then
    row P3 "slot balance and movement, N = 3…100" "not run (BENCH_QUICK=1)" — — — —
    return
  fi
  local n k r c
  for n in 3 10 100; do
    k=$(p3 'kstate (bounded' "$n" 4)
    if [ -z "$k" ]; then
      missing P3 "slot balance, N = $n" "$out/placement.md" "≤ 1.05"
      continue
    fi
    r=$(p3 'go-rendezvous' "$n" 4)
    c=$(p3 'buraksezer/consistent (bounded loads, 1.05)' "$n" 4)
    row P3 "slot balance max/avg, N = $n, 4096 slots" "$k" "ideal 1.000; go-rendezvous $r; buraksezer/consistent (1.05) $c" \
      "$(calc '%.3f' "$k / 1")" "≤ 1.05" "$(yesno "$k <= 1.05")"
    local kj rj cj kl rl cl lib='buraksezer/consistent (bounded loads, 1.05)'
    kj=$(p3 'kstate (bounded' "$n" 5); rj=$(p3 'go-rendezvous' "$n" 5); cj=$(p3 "$lib" "$n" 5)
    kl=$(p3 'kstate (bounded' "$n" 6); rl=$(p3 'go-rendezvous' "$n" 6); cl=$(p3 "$lib" "$n" 6)
    row P3 "slots moved / ideal (mean, worst), N = $n: on a join; on a leave" "${kj}; ${kl}" \
      "ideal 1; go-rendezvous ${rj}; ${rl}; buraksezer/consistent (1.05) ${cj}; ${cl}" "${kj%%,*}; ${kl%%,*} (means)" — —
  done
}

p6_rows() {
  local f=$out/p6-flush.txt fs r fl ba
  for fs in always everysec; do
    r=$(metric "$f" "BenchmarkFlushVsBare/fsync=$fs" flush/bare)
    fl=$(metric "$f" "BenchmarkFlushVsBare/fsync=$fs" flush-records/s)
    ba=$(metric "$f" "BenchmarkFlushVsBare/fsync=$fs" bare-records/s)
    if [ -z "$r" ]; then
      missing P6 "flush throughput, appendfsync $fs" "$f" "≥ 0.7"
      continue
    fi
    row P6 "flush throughput to one Redis, 256 records × 100 B per call, appendfsync $fs (loopback, no delay)" \
      "$(calc '%.0f records/s' "$fl")" "$(calc '%.0f records/s' "$ba") (bare pipelined EVALSHA)" "$(calc '%.3f' "$r")" "≥ 0.7" "$(yesno "$r >= 0.7")"
  done
}

go_rows() { # ID: the rows test/bench wrote for ID
  local f=$out/rows-$1.tsv
  if [ ! -s "$f" ]; then
    missing "$1" "(test/bench)" "$out/test-bench.txt" "see docs/performance.md"
    return
  fi
  grep -v '^#' "$f" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }'
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
delay=${KSTATE_BENCH_REDIS_DELAY:-250us}
echo "## kstate benchmarks ($mode run, $started)"
echo
echo "Machine: $(nproc) cores ($cpu), $(go version | cut -d' ' -f3), redis-server $(redis-server --version | awk '{print $3}' | tr -d 'v=') (appendonly yes, appendfsync always)."
echo "Load average (1, 5, 15 min): $load_before before the run, $load_after after it."
echo "Redis delay: $delay added each way by toxiproxy (in-process) for P2, P4, P5 and P7; P6 is on loopback without delay. What the proxy actually added is in the notes."
echo
echo "| id | measure | kstate | baseline | ratio | goal | met? |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
p1_rows
go_rows P2
p3_rows
go_rows P4
go_rows P5
p6_rows
go_rows P7
echo
echo "Notes:"
echo
for id in P2 P4 P5 P7; do
  [ -f "$out/rows-$id.tsv" ] && sed -n 's/^# /- /p' "$out/rows-$id.tsv"
done
echo "- raw outputs, rows and plots: $out"
if [ ${#failed_steps[@]} -gt 0 ]; then
  echo
  echo "FAILED steps: ${failed_steps[*]} (outputs in $out)"
  exit 1
fi
