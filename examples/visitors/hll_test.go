package visitors

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kstate-dev/kstate/examples/internal/fntest"
	"github.com/kstate-dev/kstate/pkg/sdk"
)

func newDense() *sketch {
	return &sketch{dense: make([]byte, denseRegBytes), hist: [histLen]uint32{0: registers}}
}

func mustAdd(t *testing.T, s *sketch, h uint64) bool {
	t.Helper()
	changed, err := s.add(h)
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

func TestRegisterPacking(t *testing.T) {
	b := make([]byte, denseRegBytes)
	want := make([]uint8, registers)
	for i := range want {
		want[i] = uint8((i*7 + i/5) % 64)
		setReg(b, uint32(i), want[i])
	}
	// Overwrite every third register, which must not disturb its
	// neighbours sharing its bytes.
	for i := 0; i < registers; i += 3 {
		want[i] = 63 - want[i]
		setReg(b, uint32(i), want[i])
	}
	for i, w := range want {
		if got := getReg(b, uint32(i)); got != w {
			t.Fatalf("register %d = %d, want %d", i, got, w)
		}
	}
}

func TestRho(t *testing.T) {
	tests := []struct {
		w     uint64
		width int
		want  uint8
	}{
		{1 << 63, q, 1},
		{1 << 62, q, 2},
		{1 << 14, q, 50},
		{1 << 13, q, 51}, // beyond the q hash bits: all of them are 0
		{0, q, 51},
		{0, sparseQ, 40},
	}
	for _, tc := range tests {
		if got := rho(tc.w, tc.width); got != tc.want {
			t.Errorf("rho(%#x, %d) = %d, want %d", tc.w, tc.width, got, tc.want)
		}
	}
}

// TestSparseToDense checks that a sketch that went dense has exactly the
// registers of one that was dense from the start, including for hashes whose
// 11 bits between the dense and sparse index are all 0.
func TestSparseToDense(t *testing.T) {
	hashes := make([]uint64, 0, sparseMax+500)
	for i := range cap(hashes) {
		h := hashVisitor(fmt.Sprint("v", i))
		if i%10 == 0 {
			h &^= (1<<(sparsePrecision-Precision) - 1) << sparseQ // zero the 11 bits
		}
		if i%97 == 0 {
			h &^= 1<<sparseQ - 1 // and sometimes everything after them
		}
		hashes = append(hashes, h)
	}
	sparse, dense := &sketch{}, newDense()
	indexes := map[uint64]bool{} // distinct sparse indexes
	for _, h := range hashes {
		mustAdd(t, sparse, h)
		mustAdd(t, dense, h)
		indexes[h>>sparseQ] = true
		if wantDense := len(indexes) > sparseMax; (sparse.dense != nil) != wantDense {
			t.Fatalf("after %d distinct sparse indexes: dense = %v, want %v", len(indexes), sparse.dense != nil, wantDense)
		}
	}
	if sparse.dense == nil {
		t.Fatalf("%d distinct sparse indexes did not make the sketch dense", len(indexes))
	}
	if diff := cmp.Diff(dense.dense, sparse.dense); diff != "" {
		t.Errorf("registers (-dense from the start +converted):\n%s", diff)
	}
	if diff := cmp.Diff(dense.hist, sparse.hist); diff != "" {
		t.Errorf("histogram (-dense from the start +converted):\n%s", diff)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 100, sparseMax, sparseMax + 1, 20000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := &sketch{}
			for i := range n {
				mustAdd(t, s, hashVisitor(fmt.Sprint("v", i)))
			}
			b := s.marshal()
			wantLen := headerLen + 4*n
			if n > sparseMax {
				wantLen = denseLen
			}
			if len(b) != wantLen {
				t.Errorf("encoded %d visitors in %d bytes, want %d", n, len(b), wantLen)
			}
			got, err := unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s, got, cmp.AllowUnexported(sketch{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	dense := &sketch{}
	for i := range sparseMax + 1 {
		mustAdd(t, dense, hashVisitor(fmt.Sprint("v", i)))
	}
	good := dense.marshal()
	badHist := append([]byte(nil), good...)
	badHist[headerLen+3]++ // one more empty register than there are
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "0 bytes, shorter than the header"},
		{"JSON", []byte(`{"count":3}`), "precision 34, want 14"},
		{"unknown format", []byte{7, Precision}, "unknown format 7"},
		{"sparse, torn entry", []byte{formatSparse, Precision, 0, 0, 1}, "sparse body of 3 bytes"},
		{"sparse, rho 0", []byte{formatSparse, Precision, 0, 0, 1, 0}, "sparse entry 0 (0x100) is out of range"},
		{"sparse, out of order", []byte{formatSparse, Precision, 0, 0, 2, 1, 0, 0, 1, 1}, "sparse entry 1 (0x101) is out of range or out of order"},
		{"dense, short", good[:len(good)-1], fmt.Sprintf("dense sketch of %d bytes, want %d", denseLen-1, denseLen)},
		{"dense, histogram off", badHist, "the histogram counts 16385 registers, want 16384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := unmarshal(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("unmarshal = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-1] |= 63 // the last register to 63
	s, err := unmarshal(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.add(math.MaxUint64); err == nil || !strings.Contains(err.Error(), "register 16383 holds 63") {
		t.Errorf("add to a corrupt register = %v, want an error naming it", err)
	}
}

func viewed(visitor string) sdk.Event {
	e := event.New()
	e.SetID("view-" + visitor)
	e.SetSource("/test")
	e.SetType(TypeViewed)
	if err := e.SetData(event.ApplicationJSON, map[string]string{"visitor": visitor}); err != nil {
		panic(err)
	}
	return sdk.Event{Event: e}
}

// TestAccuracy feeds 100,000 distinct visitors to one page with the state
// passed from call to call as the agent does: the bulk through the
// function's own handle (what Handler runs, minus building the sdk.Result,
// whose state only the SDK can read), the last ones and the reads through
// the gRPC server. The estimate must be within 2% of the exact count at
// every checkpoint.
func TestAccuracy(t *testing.T) {
	const (
		total   = 100_000
		viaGRPC = 20
	)
	checkpoints := map[int]bool{1000: true, sparseMax: true, sparseMax + 1: true, 5000: true, 10_000: true, 30_000: true, 50_000: true, total - viaGRPC: true}
	var (
		state  []byte
		exists bool
		writes int
	)
	for i := range total - viaGRPC {
		out, err := handle("home", state, exists, viewed(fmt.Sprint("visitor-", i)))
		if err != nil {
			t.Fatalf("visitor %d: %v", i, err)
		}
		if out.state != nil {
			state, exists = out.state, true
			writes++
		}
		if n := i + 1; checkpoints[n] {
			checkWithin(t, n, out.reply.UniqueVisitors, 0.02)
		}
	}
	t.Logf("%d distinct visitors changed the sketch %d times; state is %d bytes", total-viaGRPC, writes, len(state))
	if len(state) != denseLen {
		t.Errorf("state is %d bytes, want the dense %d", len(state), denseLen)
	}

	a := fntest.NewAgent(fntest.Serve(t, Handler()))
	a.Put("home", state)
	for i := total - viaGRPC; i < total; i++ {
		r := fntest.ReplyOf(a.Send(t, "home", fntest.CE(fmt.Sprint("view-", i), TypeViewed, fmt.Sprintf(`{"visitor":"visitor-%d"}`, i))))
		if r.Status != 200 {
			t.Fatalf("visitor %d: %+v", i, r)
		}
	}
	var got Reply
	readJSON(t, a.Send(t, "home", fntest.HTTP("GET", "/pages/home")).GetReplyHttp().GetBody(), &got)
	checkWithin(t, total, got.UniqueVisitors, 0.02)
	if got.Page != "home" {
		t.Errorf("page = %q, want home", got.Page)
	}

	// Seen visitors again: the count does not move, and (nearly) nothing
	// is written.
	before := got.UniqueVisitors
	state, _ = a.State("home")
	writes = 0
	for i := range 1000 {
		out, err := handle("home", state, true, viewed(fmt.Sprint("visitor-", i*97)))
		if err != nil {
			t.Fatal(err)
		}
		if out.state != nil {
			writes++
		}
		if out.reply.UniqueVisitors != before {
			t.Fatalf("repeat visitor %d moved the count from %d to %d", i*97, before, out.reply.UniqueVisitors)
		}
	}
	if writes != 0 {
		t.Errorf("1000 repeat visitors wrote the state %d times, want 0", writes)
	}
}

func checkWithin(t *testing.T, exact int, got int64, rel float64) {
	t.Helper()
	err := math.Abs(float64(got)-float64(exact)) / float64(exact)
	t.Logf("%7d distinct visitors: estimate %7d (error %+.3f%%)", exact, got, 100*(float64(got)-float64(exact))/float64(exact))
	if err > rel {
		t.Errorf("%d distinct visitors: estimate %d is off by %.2f%%, more than %.0f%%", exact, got, 100*err, 100*rel)
	}
}

func readJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("reply %s: %v", b, err)
	}
}
