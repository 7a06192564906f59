// Package fntest helps the examples' tests call a function the way the kstate
// agent does: over gRPC on a loopback TCP port, with the key's state passed
// from one call to the next. It is for tests only.
package fntest
