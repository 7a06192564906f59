#!/usr/bin/env bash
# The test command: everything CI runs, on a fresh Debian machine with Go.
#   - installs redis-server (and protoc, for the codegen check) with apt when missing;
#   - starts one redis-server on a free loopback port for tests that need "a Redis"
#     (tests that kill or wipe Redis start private ones through internal/redistest);
#   - runs go vet, the codegen drift check and go test -race on every package;
#   - stops Redis again, whatever happened.
# Extra arguments go to `go test` (e.g. hack/test.sh -run TestSigterm ./pkg/agent/...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf '[test] %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} with apt"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts a system redis on 6379 after install; tests never use it.
fi

workdir=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    log "stopped redis-server (pid $redis_pid)"
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

# A free port: bind :0, read the port back, release it, start redis on it;
# retry if another process took it in between.
for attempt in 1 2 3 4 5; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
  redis-server --port "$port" --bind 127.0.0.1 --dir "$workdir" --appendonly yes --save "" \
    --daemonize no --logfile "$workdir/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break 2; fi
    if ! kill -0 "$redis_pid" 2>/dev/null; then break; fi
    sleep 0.05
  done
  kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
  log "redis-server did not start on port $port (attempt $attempt); retrying"
done
[ -n "$redis_pid" ] || { log "could not start redis-server"; tail -20 "$workdir/redis.log" >&2 || true; exit 1; }
log "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port (pid $redis_pid)"

export KSTATE_TEST_REDIS_URL="redis://127.0.0.1:$port"
export KSTATE_REQUIRE_REDIS=1

log "go vet ./..."
go vet ./...

log "checking generated code is up to date"
hack/verify-codegen.sh

log "go test -race ./..."
if [ $# -gt 0 ]; then
  go test -race -count=1 -timeout 12m "$@"
else
  go test -race -count=1 -timeout 12m ./...
fi
