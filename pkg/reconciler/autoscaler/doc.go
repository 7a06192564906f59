// Package autoscaler is kstate's autoscaler plugin: a reconciler over kstate
// revisions (kstate.dev/enabled: "true") that follows their pods and private
// Endpoints and
//
//   - asks a joining pod (running, not yet Ready: its agent is held unready
//     by KSTATE_PRELOAD_GATE) to preload the slots the placement will give
//     it, over the agent's admin gRPC API (Prepare), once per pod (a pod
//     that starts alone in its space preloads and opens its gate on its
//     own, without waiting for this call: see pkg/agent);
//   - sets controller.kubernetes.io/pod-deletion-cost on every Ready pod
//     from the state it holds (Stats: entities of held slots + 10 × dirty
//     entities), at
//     most once per refresh interval per pod, so the ReplicaSet removes the
//     pods that hold the least on scale-down.
//
// Both are hints: routing and safety do not depend on them (slot leases
// with fencing epochs do). If the controller is down, a joining pod turns
// Ready when its gate expires and loads lazily, and scale-down ignores
// state; nothing becomes unsafe.
package autoscaler
