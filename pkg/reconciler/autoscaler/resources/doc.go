// Package resources holds the autoscaler plugin's pure helpers: who is a
// member of a revision's placement, which pods are joining, the deletion
// cost of a pod's state and the pod patches.
package resources
