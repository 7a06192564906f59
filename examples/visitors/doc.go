// Package visitors is kstate's streaming-aggregation example: the number of
// unique visitors per page (the key), estimated with a HyperLogLog sketch
// that is the page's whole state.
//
// Events (the key is the CloudEvents partitionkey extension by default):
//
//	com.example.page.Viewed  {"visitor": ID}  adds the visitor
//	com.example.page.Count   no data          reads, like HTTP GET and HEAD
//
// Both reply {"page": P, "unique_visitors": N}. A visitor id is any
// non-blank string; a missing or blank one is a 400 naming the field, as is
// any other event type.
//
// The estimate: the sketch has 2^14 registers, for a standard error of about
// 0.81% on large counts. Up to 3000 distinct visitors it is kept in a sparse
// form (4 bytes per visitor, at most 12 KB) that counts nearly exactly: the
// count is 1 low for each pair of visitors whose hashes share their top 25
// bits, which for n visitors happens about n²/2^26 times (once in 6700 pages
// of 100 visitors, once in 8 at 3000). Past 3000 it turns dense: 16384
// registers of 6 bits plus a 208-byte histogram of their values, 12,498 bytes
// however many visitors follow. The estimator is
// Ertl's improved one (2017), which is unbiased over the whole range without
// the empirical tables of HyperLogLog++.
//
// The state is that sketch in a small binary format (see marshal), stored
// with sdk.SetState: a raw sdk.Handler, since a JSON state would be several
// times larger. A view that changes no register (a visitor seen before,
// mostly) keeps the state, so the agent writes nothing for it. The visitor
// hash (FNV-1a with the MurmurHash3 finalizer) is part of the stored format
// and must never change.
package visitors
