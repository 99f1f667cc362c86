// Command pause is the lab's pod sandbox image: it holds a pod's namespaces
// open, reaps the zombies of the pod's processes that it inherits, and exits
// on SIGINT or SIGTERM, as the upstream pause container does. The lab builds
// it into an image of its own, so that real nodes need no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
