// Command upstream builds the pinned upstream binaries into their cache, or
// says that the cache has them, before anything else compiles: it is small
// (the standard library and two of ironlb's packages), so a cold make lab
// shows the build's progress within seconds instead of compiling the lab
// tool first in silence. The packages the lab tool shares with the upstream
// binaries (client-go and the API types) are then taken from the Go build
// cache.
//
//	go run ./hack/upstream -for lab    # what make lab runs: kubectl only if none fits on the PATH
//	go run ./hack/upstream -for test   # what make test runs: every binary, helm and kubectl included
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/ironlb/ironlb/internal/testenv"
	"github.com/ironlb/ironlb/internal/upstream"
)

func main() {
	what := flag.String("for", "test", "lab: the binaries make lab runs; test: every binary the tests run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var names []string
	switch *what {
	case "lab":
		names = append(slices.Clone(upstream.Lab), upstream.Nodes...)
		if testenv.Kubectl(ctx) == "" {
			names = append(names, "kubectl")
		}
	case "test":
		for _, b := range upstream.Binaries {
			names = append(names, b.Name)
		}
	default:
		fmt.Fprintf(os.Stderr, "upstream: -for %q: want lab or test\n", *what)
		os.Exit(2)
	}
	bins, err := testenv.Binaries(ctx, names...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "upstream: %v\n", err)
		os.Exit(1)
	}
	if note := bins.Reused(names); note != "" {
		fmt.Fprintln(os.Stderr, note)
	}
}
