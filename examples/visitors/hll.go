package visitors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"slices"
	"sort"
)

// The sketch is a HyperLogLog with 2^Precision registers (Flajolet et al.
// 2007), estimated with Ertl's improved estimator ("New cardinality
// estimation algorithms for HyperLogLog sketches", 2017, algorithm 6), which
// needs no empirical bias tables and is accurate from 0 to billions. Small
// sets use a sparse form, as in HyperLogLog++ (Heule et al. 2013).
const (
	// Precision is the number of index bits: 16384 registers, a standard
	// error of 1.04/sqrt(16384) ≈ 0.81%.
	Precision = 14

	registers = 1 << Precision
	// q is the number of hash bits left after the index; register values
	// are 0 (empty) to q+1.
	q = 64 - Precision
	// histLen is the number of possible register values, 0 to q+1.
	histLen = q + 2

	// sparsePrecision is the index width of the sparse form, whose
	// 2^25 "registers" make linear counting nearly exact for small sets.
	sparsePrecision = 25
	sparseQ         = 64 - sparsePrecision
	// sparseMax is the number of sparse entries (4 bytes each) beyond
	// which the dense form (about 12 KiB) is smaller.
	sparseMax = 3000

	formatSparse byte = 1
	formatDense  byte = 2
	headerLen         = 2
	// denseRegBytes holds the registers packed at 6 bits each.
	denseRegBytes = registers * 6 / 8
	denseLen      = headerLen + 4*histLen + denseRegBytes
)

// sketch is a HyperLogLog sketch. The zero sketch is empty and sparse.
type sketch struct {
	// sparse holds, sorted and one per index, entries idx<<6 | rho for a
	// 25-bit index and rho of the remaining 39 bits; used while dense is
	// nil.
	sparse []uint32
	// dense is the packed 6-bit registers once the sketch went dense.
	dense []byte
	// hist counts the registers of each value (dense only), so that an
	// estimate costs O(q), not a pass over 16384 registers.
	hist [histLen]uint32
}

// hashVisitor maps a visitor id to 64 well-mixed bits: FNV-1a, then the
// MurmurHash3 finalizer, since FNV's high bits (the register index) mix
// poorly for ids that differ only at the end. The hash must never change:
// stored sketches depend on it.
func hashVisitor(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// add records a hash and reports whether the sketch changed. It fails only
// on a corrupt register.
func (s *sketch) add(h uint64) (bool, error) {
	if s.dense != nil {
		return s.addDense(uint32(h>>q), rho(h<<Precision, q))
	}
	idx := uint32(h >> sparseQ)
	e := idx<<6 | uint32(rho(h<<sparsePrecision, sparseQ))
	i := sort.Search(len(s.sparse), func(i int) bool { return s.sparse[i]>>6 >= idx })
	switch {
	case i < len(s.sparse) && s.sparse[i]>>6 == idx:
		if e <= s.sparse[i] {
			return false, nil
		}
		s.sparse[i] = e
	default:
		s.sparse = slices.Insert(s.sparse, i, e)
		if len(s.sparse) > sparseMax {
			return true, s.toDense()
		}
	}
	return true, nil
}

// rho is the position of the first 1 bit in the top width bits of w,
// counting from 1; width+1 when they are all 0.
func rho(w uint64, width int) uint8 {
	return uint8(min(bits.LeadingZeros64(w), width) + 1)
}

func (s *sketch) addDense(idx uint32, r uint8) (bool, error) {
	old := getReg(s.dense, idx)
	if old > q+1 {
		return false, fmt.Errorf("%w: register %d holds %d, more than the largest value %d", errSketch, idx, old, q+1)
	}
	if r <= old {
		return false, nil
	}
	setReg(s.dense, idx, r)
	s.hist[old]--
	s.hist[r]++
	return true, nil
}

// toDense converts the sparse entries to registers. A sparse entry's index
// holds the dense index and 11 more bits of the hash: if those bits are not
// all 0, the dense rho is found in them; otherwise it continues into the
// entry's own rho.
func (s *sketch) toDense() error {
	s.dense = make([]byte, denseRegBytes)
	s.hist = [histLen]uint32{0: registers}
	const extra = sparsePrecision - Precision // 11
	for _, e := range s.sparse {
		idx25, r := e>>6, uint8(e&63)
		low := idx25 & (1<<extra - 1)
		if low != 0 {
			r = uint8(bits.LeadingZeros32(low) - (32 - extra) + 1)
		} else {
			r += extra
		}
		if _, err := s.addDense(idx25>>extra, r); err != nil {
			return err
		}
	}
	s.sparse = nil
	return nil
}

// 4 registers of 6 bits share 3 bytes, big end first.
func getReg(b []byte, i uint32) uint8 {
	o, shift := 3*(i/4), 18-6*(i%4)
	w := uint32(b[o])<<16 | uint32(b[o+1])<<8 | uint32(b[o+2])
	return uint8(w >> shift & 63)
}

func setReg(b []byte, i uint32, v uint8) {
	o, shift := 3*(i/4), 18-6*(i%4)
	w := uint32(b[o])<<16 | uint32(b[o+1])<<8 | uint32(b[o+2])
	w = w&^(63<<shift) | uint32(v)<<shift
	b[o], b[o+1], b[o+2] = byte(w>>16), byte(w>>8), byte(w)
}

// estimate is the estimated number of distinct hashes added.
func (s *sketch) estimate() int64 {
	if s.dense == nil {
		// Linear counting over the 2^25 sparse registers: for n entries
		// the expected number of collisions is about n²/2^26, under 0.2
		// at the sparse limit.
		const m = float64(uint64(1) << sparsePrecision)
		return int64(math.Round(m * math.Log(m/(m-float64(len(s.sparse))))))
	}
	const m = float64(registers)
	z := m * tau(1-float64(s.hist[q+1])/m)
	for k := q; k >= 1; k-- {
		z = 0.5 * (z + float64(s.hist[k]))
	}
	z += m * sigma(float64(s.hist[0])/m)
	return int64(math.Round(m * m / (2 * math.Ln2 * z)))
}

// sigma and tau are the series of Ertl's estimator (paper, algorithm 6).
func sigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func tau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// marshal encodes the sketch:
//
//	sparse: 0x01, Precision, then each entry as 4 bytes big-endian
//	dense:  0x02, Precision, the histogram as histLen 4-byte big-endian
//	        counts, then the registers packed 6 bits each (12288 bytes)
//
// The histogram is redundant with the registers; it is stored so that a
// call does not have to rebuild it from all of them.
func (s *sketch) marshal() []byte {
	if s.dense == nil {
		b := make([]byte, headerLen, headerLen+4*len(s.sparse))
		b[0], b[1] = formatSparse, Precision
		for _, e := range s.sparse {
			b = binary.BigEndian.AppendUint32(b, e)
		}
		return b
	}
	b := make([]byte, headerLen, denseLen)
	b[0], b[1] = formatDense, Precision
	for _, c := range s.hist {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	return append(b, s.dense...)
}

var errSketch = errors.New("not a sketch of this example")

// unmarshal decodes what marshal encoded, checking it enough that a wrong
// state fails loudly instead of counting wrong.
func unmarshal(b []byte) (*sketch, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", errSketch, len(b))
	}
	if b[1] != Precision {
		return nil, fmt.Errorf("%w: precision %d, want %d", errSketch, b[1], Precision)
	}
	s := &sketch{}
	body := b[headerLen:]
	switch b[0] {
	case formatSparse:
		if len(body)%4 != 0 || len(body)/4 > sparseMax {
			return nil, fmt.Errorf("%w: sparse body of %d bytes", errSketch, len(body))
		}
		s.sparse = make([]uint32, len(body)/4)
		for i := range s.sparse {
			e := binary.BigEndian.Uint32(body[4*i:])
			if r := e & 63; r == 0 || r > sparseQ+1 || e>>6 >= 1<<sparsePrecision || (i > 0 && e>>6 <= s.sparse[i-1]>>6) {
				return nil, fmt.Errorf("%w: sparse entry %d (%#x) is out of range or out of order", errSketch, i, e)
			}
			s.sparse[i] = e
		}
		return s, nil
	case formatDense:
		if len(b) != denseLen {
			return nil, fmt.Errorf("%w: dense sketch of %d bytes, want %d", errSketch, len(b), denseLen)
		}
		var sum uint64
		for i := range s.hist {
			s.hist[i] = binary.BigEndian.Uint32(body[4*i:])
			sum += uint64(s.hist[i])
		}
		if sum != registers {
			return nil, fmt.Errorf("%w: the histogram counts %d registers, want %d", errSketch, sum, registers)
		}
		s.dense = slices.Clone(body[4*histLen:])
		return s, nil
	default:
		return nil, fmt.Errorf("%w: unknown format %d", errSketch, b[0])
	}
}
