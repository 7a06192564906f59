package agent

import "github.com/kstate-dev/kstate/pkg/placement"

func slotOf(key string, slots int) uint32 { return placement.SlotOf(key, slots) }
