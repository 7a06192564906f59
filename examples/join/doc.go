// Package join is kstate's stream-join example: per device (the key), it
// pairs a temperature reading with a humidity reading taken within Window of
// each other, in event time, and emits each pair.
//
// Events (the key is the CloudEvents partitionkey extension by default):
//
//	com.example.sensor.Reading  {"sensor": "temp"|"humidity", "value": V, "ts": RFC3339}
//	com.example.sensor.Status   no data: reads, like HTTP GET and HEAD
//
// A reading replies with what it did: its outcome (joined, buffered, late or
// duplicate), the pairs it produced (zero or one), how many buffered
// readings it dropped, and the newest timestamp seen. Each pair is also
// emitted as a com.example.sensor.Joined event. A read replies with the
// buffered readings and the counters. Time is event time (the "ts" field):
// the function never reads a clock, so a replay gives the same result.
//
// The rules, with Window = 5s and AllowedLateness = 30s:
//
//   - Joining. A reading joins the buffered, not yet joined reading of the
//     other sensor closest to it in time, if they are at most Window apart
//     (inclusive); on a tie, the older one. Both are then used up: each
//     reading joins at most once. Pairs are made greedily when the second
//     reading arrives; a closer reading that arrives later does not re-pair
//     them.
//   - Out of order. Readings may arrive in any order within the allowed
//     lateness: a reading older than the newest one seen joins like any
//     other, with buffered readings before or after it.
//   - Late. A reading older than the newest timestamp seen minus
//     AllowedLateness (strictly) is not processed: outcome "late", counted,
//     reply 200. Its partner may already have been dropped, so joining it
//     could give a different answer than it would have on time. It is not a
//     4xx: a broker would send it to the dead-letter sink as a failure,
//     while nothing failed.
//   - Unmatched readings wait in a buffer per sensor until no reading the
//     function can still accept could join them: when they are older than
//     newest - AllowedLateness - Window. They are then dropped and counted
//     as expired. A buffer holds at most MaxBuffered readings; past that
//     the oldest other reading is dropped (counted as overflowed if it had
//     not joined).
//   - Duplicates. A reading with the same sensor and the same instant as one
//     the function still remembers (however its offset is written) is a
//     duplicate: outcome "duplicate", counted, the first one wins even if the
//     values differ. Joined readings are remembered until they are older than
//     newest - AllowedLateness, after which a copy would be late anyway, and
//     as long as they fit in the buffer. This is a different thing from the
//     agent's deduplication of redelivered CloudEvents (same source and id),
//     which never reach the function twice: it catches a device that sends
//     the same reading again as a new event.
//
// Invalid data is a 400 naming the field, and the state is unchanged.
//
// Event time is trusted: one reading with a timestamp far in the future
// moves "newest" forward and makes every later on-time reading late. A real
// system would bound timestamps against the arrival time; this example keeps
// the function free of clocks.
//
// The state is stored as JSON: the newest timestamp, the two buffers and the
// counters.
package join
