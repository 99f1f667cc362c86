package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Package is a Debian package the lab or the tests need, and the file by
// which the check finds it installed.
type Package struct {
	Name  string
	Probe string // a command name, or an absolute path
}

// parsePackages reads packages.txt: "name probe" per line, # comments.
func parsePackages(text string) ([]Package, error) {
	var pkgs []Package
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("packages.txt:%d: want \"package probe\", got %q", n, sc.Text())
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("packages.txt:%d: %s listed twice", n, f[0])
		}
		seen[f[0]] = true
		pkgs = append(pkgs, Package{Name: f[0], Probe: f[1]})
	}
	return pkgs, sc.Err()
}

// Problem is one thing that stops the target, and the one command (or step)
// that fixes it.
type Problem struct {
	What string
	Fix  string
}

// Host is what the check found about the packages.
type Host struct {
	Root     bool
	Apt      bool // apt-get is there: Debian, Ubuntu and their kin
	AptLists bool // apt-get update has run at least once
	// Install says the check may install packages itself
	// (IRONLB_PREREQ_INSTALL=no says it may not).
	Install bool
	Missing []Package
}

// aptInstall is the command that installs pkgs.
func aptInstall(pkgs []string) string {
	return "apt-get install -y --no-install-recommends " + strings.Join(pkgs, " ")
}

// decidePackages says which missing packages to install now, as root with
// apt-get, or else the problem to report with the command that fixes it.
func decidePackages(h Host) (install []string, p *Problem) {
	if len(h.Missing) == 0 {
		return nil, nil
	}
	var names, found []string
	for _, m := range h.Missing {
		names = append(names, m.Name)
		if strings.HasPrefix(m.Probe, "/") {
			found = append(found, fmt.Sprintf("%s (no %s)", m.Name, m.Probe))
		} else {
			found = append(found, fmt.Sprintf("%s (no %s command)", m.Name, m.Probe))
		}
	}
	if h.Root && h.Apt && h.Install {
		return names, nil
	}
	what := "Debian packages missing: " + strings.Join(found, ", ")
	if !h.Apt {
		return nil, &Problem{What: what, Fix: "install the packages that provide " + probes(h.Missing) + " with this system's package manager (Debian names: " + strings.Join(names, " ") + ")"}
	}
	sudo := ""
	if !h.Root {
		sudo = "sudo "
	}
	fix := sudo + aptInstall(names)
	if !h.AptLists {
		fix = sudo + "apt-get update && " + fix
	}
	return nil, &Problem{What: what, Fix: fix}
}

func probes(pkgs []Package) string {
	var s []string
	for _, p := range pkgs {
		s = append(s, p.Probe)
	}
	return strings.Join(s, ", ")
}

// goVersionAtLeast says whether the toolchain version have ("go1.26.8", as go
// env GOVERSION says) is at least want ("1.26" or "1.26.0", as go.mod says).
func goVersionAtLeast(have, want string) bool {
	h, w := versionParts(strings.TrimPrefix(have, "go")), versionParts(want)
	for i := range max(len(h), len(w)) {
		var a, b int
		if i < len(h) {
			a = h[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			return a > b
		}
	}
	return true
}

// versionParts reads "1.26.8" (or "1.27rc1", as 1.27) as numbers.
func versionParts(v string) []int {
	var parts []int
	for _, s := range strings.Split(v, ".") {
		end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			s = s[:end]
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			break
		}
		parts = append(parts, n)
	}
	return parts
}

const gib = 1 << 30

// Free disk that a build needs where its caches live: a cold build of the
// upstream binaries fills the Go build cache with several GiB (see the
// README); a warm run only writes logs and the ironlb binaries.
const (
	coldNeed = 10 * gib
	warmNeed = 1 * gib
)

// diskNeed is the free space a filesystem that holds a build cache must have.
func diskNeed(warm bool) uint64 {
	if warm {
		return warmNeed
	}
	return coldNeed
}

// checkDisk reports a filesystem with less than need bytes free.
func checkDisk(path string, free, need uint64, warm bool) *Problem {
	if free >= need {
		return nil
	}
	why := "a cold build of the upstream binaries"
	if warm {
		why = "the build of ironlb's binaries and the lab's logs"
	}
	return &Problem{
		What: fmt.Sprintf("%.1f GiB free on the filesystem of %s; %s needs %d GiB", float64(free)/gib, path, why, need/gib),
		Fix:  fmt.Sprintf("free %.1f GiB there (df -h %s), or point GOCACHE and IRONLB_CACHE_DIR at a filesystem with room", float64(need-free)/gib, path),
	}
}
