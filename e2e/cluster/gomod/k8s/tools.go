//go:build tools

// Package k8sbins pins the Kubernetes commands ringkv's test tiers build.
// k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the
// staging modules with local paths), so this wrapper module requires it and
// replaces every k8s.io staging module with its published v0.32.x tag.
package k8sbins

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
