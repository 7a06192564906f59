// Package webhook is kstate's admission webhook for serving.knative.dev/v1
// Services, built on knative.dev/pkg's resourcesemantics webhooks.
//
// Why resourcesemantics on a foreign type: knative.dev/pkg's defaulting and
// validation admission controllers decode the object into a Go type and call
// its SetDefaults and Validate, set up the context (create or update, the
// old object as baseline, user info) and compute the JSON patch; their
// reconcilers keep the webhook configurations' rules, CA bundle (from the
// certificate reconciler's Secret) and reinvocation policy in shape. A
// Knative Service's own SetDefaults and Validate are Knative's, so the
// handler registered here is Service, a wrapper type whose SetDefaults and
// Validate are kstate's: Knative's webhook keeps defaulting and validating
// the same object with Knative's rules. A custom AdmissionController would
// have had to reimplement all of that, and the validation controller accepts
// callbacks only for kinds it also has a handler for.
//
// The mutating webhook (SetDefaults, Inject) turns a Service whose revision
// template has kstate.dev/enabled: "true" into a kstate Service: it injects
// the agent container, which becomes the serving container; the user's
// container becomes the function, without a port and with
// KSTATE_FUNCTION_ADDR; it pins kstate.dev/slots and kstate.dev/space,
// keeps the activator in the path (target-burst-capacity -1) and gives the
// revision a timeout long enough for the final flush. It is idempotent:
// admitting its own output changes nothing, with Knative's defaulting run
// before, after or in between (the webhook is reinvoked if needed).
//
// The validating webhook (Validate) rejects bad kstate.dev/* values with
// their field path, a slots or space change of a Service that has them, a
// space of another namespace, a timeout too short for the final flush, and
// a kstate Service the mutating webhook has not injected.
package webhook
