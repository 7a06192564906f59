// Package reconciler holds kstate's reconcilers. Each is a knative.dev/pkg
// reconciler in its own package, pkg/reconciler/<name>, with pure builders
// in pkg/reconciler/<name>/resources.
package reconciler
