// Package kstate is the one place that reads the kstate.dev/* annotations
// of a Knative Service's revision template (and so of its revisions) into
// typed values.
//
// The webhook (pkg/webhook) reads them with ParseSpec, which reports every
// bad value as an apis.FieldError naming the annotation; the activator
// plugin reads the routing subset with ParseRouting, which needs no
// ConfigMap. Both call the same per-annotation parsers, so a value the
// webhook admits is a value the activator and the agent accept, and the
// defaults they fill in are the same.
//
// docs/annotations.md is the user-facing description of every annotation;
// keep it in step with Annotations.
package kstate
