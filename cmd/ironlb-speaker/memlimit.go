package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The speaker's memory follows its LoadBalancer Services, and most of what
// it allocates is garbage soon (decoded objects, plans of a sync). Go lets
// the heap grow to twice what is live before it collects (GOGC=100) and
// keeps what it freed for a while, so the RSS is about twice the live heap
// plus the binary's pages. A soft memory limit makes the runtime collect
// and return memory sooner as it nears the limit, at some CPU, and only
// then: below the limit nothing changes.

// cgroupFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit is the soft memory limit to set from the --memory-limit flag
// (value), GOMEMLIMIT (env) and the container's memory limit (container, 0
// when there is none), and what it follows; -1: leave the runtime's as it
// is. "auto" is three quarters of the container's limit (the binary's
// pages, about 50 MiB, count in the container's memory but not in Go's),
// unless GOMEMLIMIT sets one; "none" sets none.
func memoryLimit(value, env string, container int64) (int64, string, error) {
	switch value {
	case "none", "0":
		return -1, "none", nil
	case "auto":
		switch {
		case env != "":
			return -1, "GOMEMLIMIT", nil
		case container > 0:
			return container / 4 * 3, "three quarters of the container's memory limit", nil
		}
		return -1, "none: no container memory limit", nil
	}
	q, err := resource.ParseQuantity(value)
	if err != nil || q.Value() <= 0 {
		return 0, "", fmt.Errorf("--memory-limit %q: want auto, none or a quantity such as 96Mi", value)
	}
	return q.Value(), "--memory-limit", nil
}

// containerMemory is the memory limit in a cgroup file's content, 0 when it
// sets none ("max", or v1's page-rounded maximum).
func containerMemory(content string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(content), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}

// readContainerMemory is this process's container memory limit, 0 if none.
func readContainerMemory() int64 {
	for _, f := range cgroupFiles {
		if b, err := os.ReadFile(f); err == nil {
			return containerMemory(string(b))
		}
	}
	return 0
}
