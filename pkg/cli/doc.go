// Package cli holds the commands of kn-kstate, the kstate CLI. The binary is
// named for kn's plugin discovery, so `kn kstate …` runs it when it is on
// PATH; it also works alone. cmd/kn-kstate only wires this package.
package cli
