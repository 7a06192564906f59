package statestore

import (
	"errors"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// fail sorts errors into the sentinels callers branch on: unavailable
// (retry later, the outcome may be unknown), closed (this store was closed)
// and the rest (a bug or a bad request).
func TestRedisFailClassifies(t *testing.T) {
	open, closed := &Redis{}, &Redis{}
	closed.closed.Store(true)
	for _, tc := range []struct {
		name        string
		r           *Redis
		err         error
		unavailable bool
		isClosed    bool
	}{
		{name: "node client closed by a slot map change, store open", r: open, err: fmt.Errorf("evalsha: %w", redis.ErrClosed), unavailable: true},
		{name: "this store closed", r: closed, err: redis.ErrClosed, isClosed: true},
		{name: "AOF loading", r: open, err: replyError("LOADING Redis is loading the dataset in memory"), unavailable: true},
		{name: "cluster reconfiguring", r: open, err: replyError("TRYAGAIN Multiple keys request during rehashing of slot"), unavailable: true},
		{name: "a script bug", r: open, err: replyError("ERR user_script:1: bad argument")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.fail("op", tc.err)
			if got := errors.Is(err, ErrUnavailable); got != tc.unavailable {
				t.Errorf("fail(%v) = %v: unavailable %t, want %t", tc.err, err, got, tc.unavailable)
			}
			if got := errors.Is(err, ErrClosed); got != tc.isClosed {
				t.Errorf("fail(%v) = %v: closed %t, want %t", tc.err, err, got, tc.isClosed)
			}
		})
	}
}

// replyError is an error reply from the server, as go-redis types them.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}
