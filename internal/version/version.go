// Package version tells which ironlb a binary is. Release builds set Version
// and Commit with the linker (make build, make images, the Dockerfile):
//
//	-ldflags "-X github.com/ironlb/ironlb/internal/version.Version=v0.1.0
//	          -X github.com/ironlb/ironlb/internal/version.Commit=<sha>"
//
// Other builds (go build, go install) fall back to what the Go toolchain
// recorded: the module version and the VCS revision.
package version

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker.
var (
	Version = ""
	Commit  = ""
)

// Info is what --version=raw prints as JSON.
type Info struct {
	Binary     string `json:"binary"`
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	Kubernetes string `json:"kubernetesLibraries,omitempty"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
}

// Get describes the running binary.
func Get(binary string) Info {
	info := Info{
		Binary:   binary,
		Version:  Version,
		Commit:   Commit,
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/client-go" {
				info.Kubernetes = d.Version
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// String is the one line --version prints.
func (i Info) String() string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s)", i.Binary, i.Version, i.Commit, i.Go, i.Platform)
}

// Print writes the answer to --version: one line, or JSON for "raw".
func Print(binary, mode string) string {
	info := Get(binary)
	if mode == "raw" {
		b, _ := json.MarshalIndent(info, "", "  ")
		return string(b)
	}
	return info.String()
}
