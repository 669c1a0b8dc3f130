// Command pause is the sandbox ("infra") container of every pod in ringkv's
// offline kind node image, standing in for registry.k8s.io/pause, which cannot
// be pulled here. Like the upstream one it holds the pod's namespaces open,
// exits on SIGINT/SIGTERM, and reaps zombies when it is PID 1 of a shared PID
// namespace. Written for ringkv; static (CGO_ENABLED=0), no dependencies.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "ringkv"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
		os.Exit(0)
	}
}
