// Package counter is kstate's smallest example function: a count per key.
//
// Every event adds data.by (default 1) to its key's count, except reads (an
// event of type counter.get, or a plain HTTP GET or HEAD), which change
// nothing. Both reply with {"key": K, "count": N}. The state is stored as
// {"count": N}. Bad data is a 400 whose message names the field; an addition
// that would overflow the count is a 400 too, and leaves it unchanged.
package counter
