package main

import (
	"os"
	"runtime/debug"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// defaultGCPercent trades a little CPU for memory: ironlb-ccm's live heap is mostly its caches,
// which change slowly, and with Go's default of 100 the heap grows to twice their size between
// collections. At 50 it grows to one and a half times; the collector's extra work is small
// beside the API server's, which is what limits how fast Services get their addresses.
const defaultGCPercent = 50

var gcPercent int

func addGCFlags(fs *pflag.FlagSet) {
	fs.IntVar(&gcPercent, "gc-percent", defaultGCPercent,
		"How far the Go heap may grow past the live heap before a collection, in percent (Go's GOGC; GOGC in the environment wins unless this flag is set). Beside it, GOMEMLIMIT sets a soft limit.")
}

// applyGC sets the collector's target once flags are parsed.
func applyGC(fs *pflag.FlagSet) {
	if _, fromEnv := os.LookupEnv("GOGC"); fromEnv && !fs.Changed("gc-percent") {
		return
	}
	old := debug.SetGCPercent(gcPercent)
	klog.V(2).InfoS("Set the Go collector's target", "gcPercent", gcPercent, "was", old)
}
