#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC code under proto/ from pinned tools:
# protoc from Debian (apt), protoc-gen-go and protoc-gen-go-grpc from the Go
# module proxy at the versions below. Run it after editing any .proto file;
# hack/verify-codegen.sh (part of hack/test.sh) fails when the output drifts.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.34.1      # google.golang.org/protobuf, as pinned in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.4.0  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v protoc >/dev/null 2>&1; then
  echo "update-codegen: installing protoc (protobuf-compiler) with apt" >&2
  apt-get install -y -qq protobuf-compiler >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; }
fi

bin="$root/.bin"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"

for f in proto/function/v1/function.proto proto/admin/v1/admin.proto; do
  PATH="$bin:$PATH" protoc -I proto -I /usr/include \
    --go_out=proto --go_opt=paths=source_relative \
    --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
    "${f#proto/}"
done
echo "update-codegen: regenerated $(ls proto/*/v1/*.pb.go | wc -l) files with $(protoc --version)"
