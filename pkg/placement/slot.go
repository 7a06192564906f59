package placement

import "github.com/cespare/xxhash/v2"

// DefaultSlots is the slot count of an entity space unless
// kstate.dev/slots says otherwise. See doc.go for why.
const DefaultSlots = 4096

// MaxSlots bounds kstate.dev/slots: the slot table is held in memory by every
// activator and agent, and a slot is the unit of lease and handoff.
const MaxSlots = 65536

// SlotOf maps an entity key to its slot: xxHash64 (seed 0) of the key's
// UTF-8 bytes, modulo slots. This is the one definition used by the
// activator, the agent, the controller and the CLI; any other implementation
// must produce the same value (xxh64 is specified at
// https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md).
func SlotOf(key string, slots int) uint32 {
	return uint32(xxhash.Sum64String(key) % uint64(slots))
}
