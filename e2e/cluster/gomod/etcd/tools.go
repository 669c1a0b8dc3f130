//go:build tools

// Package etcdbin pins the etcd server for the kind node image.
// go.etcd.io/etcd/server/v3 cannot be `go install`ed (its go.mod has replace
// directives); this wrapper requires it so `go build go.etcd.io/etcd/server/v3`
// yields the etcd binary (server/main.go is package main).
package etcdbin

import _ "go.etcd.io/etcd/server/v3"
