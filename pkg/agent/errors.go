package agent

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Errors the ingress maps to HTTP answers. Each says what to do about it.
var (
	errDraining   = errors.New("agent is shutting down: retry on another replica")
	errStoreReset = errors.New("the state store came back empty (reset detected); refusing to serve until it is restored")
	errSlotLost   = errors.New("the slot moved to another holder while this event ran; it was not applied")
	// errPreloadOnly ends a preload's try at a lease another agent holds.
	errPreloadOnly = errors.New("slot held elsewhere; preloaded as a hint")
)

// NotOwnerError: another agent holds the slot's lease. The ingress answers
// 421 with the holder, and the activator sends the request there. Nothing
// was applied, so the retry is safe.
type NotOwnerError struct {
	Slot   uint32
	Holder string
	Addr   string
}

func (e *NotOwnerError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("slot %d is moving between holders; retry shortly", e.Slot)
	}
	return fmt.Sprintf("slot %d is held by %s (%s)", e.Slot, e.Holder, e.Addr)
}

// OverloadError: a bound was reached. The ingress answers 503 with Retry-After.
type OverloadError struct {
	What       string
	RetryAfter time.Duration
}

func (e *OverloadError) Error() string { return "overloaded: " + e.What }

// UnavailableError: the store cannot be reached for something this event
// needs (a load, a lease, or a sync write).
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "state store unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// FunctionError: the user function failed or could not be reached.
type FunctionError struct{ Err error }

func (e *FunctionError) Error() string { return "function call failed: " + e.Err.Error() }
func (e *FunctionError) Unwrap() error { return e.Err }

// Header names kstate sets on every answer.
const (
	HeaderPod        = "Kstate-Pod"
	HeaderSlot       = "Kstate-Slot"
	HeaderHolder     = "Kstate-Holder"
	HeaderHolderAddr = "Kstate-Holder-Addr"
	HeaderDuplicate  = "Kstate-Duplicate"
	// HeaderDraining marks a 503 from an agent that is shutting down: the
	// event was not applied and may go to the slot's next owner.
	HeaderDraining = "Kstate-Draining"
	HeaderType     = "Kstate-Type"
	// DefaultKeyHeader is where plain HTTP requests carry the key unless
	// kstate.dev/key says otherwise.
	DefaultKeyHeader = "Kstate-Key"
)

// httpStatus maps an Invoke error to an HTTP status and sets the headers that
// go with it.
func httpStatus(err error, h http.Header) int {
	var notOwner *NotOwnerError
	var overload *OverloadError
	var unavailable *UnavailableError
	var fn *FunctionError
	switch {
	case errors.As(err, &notOwner):
		if notOwner.Holder == "" {
			h.Set("Retry-After", "1")
			return http.StatusServiceUnavailable
		}
		h.Set(HeaderHolder, notOwner.Holder)
		h.Set(HeaderHolderAddr, notOwner.Addr)
		return http.StatusMisdirectedRequest
	case errors.As(err, &overload):
		secs := int(overload.RetryAfter / time.Second)
		if secs < 1 {
			secs = 1
		}
		h.Set("Retry-After", strconv.Itoa(secs))
		return http.StatusServiceUnavailable
	case errors.Is(err, errDraining):
		h.Set(HeaderDraining, "true")
		h.Set("Retry-After", "1")
		return http.StatusServiceUnavailable
	case errors.As(err, &unavailable), errors.Is(err, errStoreReset), errors.Is(err, errSlotLost):
		h.Set("Retry-After", "1")
		return http.StatusServiceUnavailable
	case errors.As(err, &fn):
		return http.StatusBadGateway
	case errors.Is(err, errDeadline):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

var errDeadline = errors.New("deadline exceeded")
