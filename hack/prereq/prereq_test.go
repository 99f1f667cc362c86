package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPackages_TheListNamesEachPackageOnceWithAProbe(t *testing.T) {
	pkgs, err := parsePackages(packagesTxt)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, p := range pkgs {
		byName[p.Name] = p.Probe
	}
	// What the lab runs: FRR's daemons from their own directory, and the
	// tools its helpers call.
	for name, probe := range map[string]string{"frr": "/usr/lib/frr/bgpd", "iproute2": "ip", "nftables": "nft", "curl": "curl", "arping": "arping", "ndisc6": "ndisc6"} {
		if byName[name] != probe {
			t.Errorf("package %s found by %q, want %q", name, byName[name], probe)
		}
	}
	if _, err := parsePackages("frr /usr/lib/frr/bgpd\nfrr /usr/lib/frr/zebra\n"); err == nil {
		t.Error("a package listed twice is accepted")
	}
	if _, err := parsePackages("frr\n"); err == nil {
		t.Error("a package without a probe is accepted")
	}
}

func TestDecidePackages_RootOnDebianInstallsElseSaysTheCommand(t *testing.T) {
	frr := []Package{{"frr", "/usr/lib/frr/bgpd"}, {"ndisc6", "ndisc6"}}
	for _, c := range []struct {
		name    string
		host    Host
		install string
		fix     string
	}{
		{"nothing missing", Host{Root: true, Apt: true, AptLists: true, Install: true}, "", ""},
		{"root on Debian installs", Host{Root: true, Apt: true, AptLists: true, Install: true, Missing: frr}, "frr ndisc6", ""},
		{"install turned off", Host{Root: true, Apt: true, AptLists: true, Missing: frr},
			"", "apt-get install -y --no-install-recommends frr ndisc6"},
		{"not root", Host{Apt: true, AptLists: true, Install: true, Missing: frr},
			"", "sudo apt-get install -y --no-install-recommends frr ndisc6"},
		{"no package lists yet", Host{Root: true, Apt: true, Missing: frr},
			"", "apt-get update && apt-get install -y --no-install-recommends frr ndisc6"},
		{"not Debian", Host{Root: true, Install: true, Missing: frr},
			"", "install the packages that provide /usr/lib/frr/bgpd, ndisc6 with this system's package manager (Debian names: frr ndisc6)"},
	} {
		install, p := decidePackages(c.host)
		if got := strings.Join(install, " "); got != c.install {
			t.Errorf("%s: installs %q, want %q", c.name, got, c.install)
		}
		fix := ""
		if p != nil {
			fix = p.Fix
			if !strings.Contains(p.What, "frr (no /usr/lib/frr/bgpd), ndisc6 (no ndisc6 command)") {
				t.Errorf("%s: problem %q does not say what is missing", c.name, p.What)
			}
		}
		if fix != c.fix {
			t.Errorf("%s: fix %q, want %q", c.name, fix, c.fix)
		}
	}
}

func TestGoVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have, want string
		ok         bool
	}{
		{"go1.26.8", "1.26.0", true},
		{"go1.26.0", "1.26", true},
		{"go1.27rc1", "1.26.0", true},
		{"go1.25.9", "1.26", false},
		{"go1.26.0", "1.26.1", false},
		{"go2.0", "1.26", true},
	} {
		if got := goVersionAtLeast(c.have, c.want); got != c.ok {
			t.Errorf("goVersionAtLeast(%q, %q) = %t, want %t", c.have, c.want, got, c.ok)
		}
	}
}

func TestCheckDisk_ColdBuildNeedsRoomWarmRunLittle(t *testing.T) {
	if p := checkDisk("/cache", 9*gib, diskNeed(false), false); p == nil || !strings.Contains(p.What, "needs 10 GiB") {
		t.Errorf("9 GiB free for a cold build: %+v", p)
	}
	if p := checkDisk("/cache", 9*gib, diskNeed(true), true); p != nil {
		t.Errorf("9 GiB free with a warm cache: %+v", p)
	}
	if p := checkDisk("/cache", gib/2, diskNeed(true), true); p == nil {
		t.Error("half a GiB free is enough even warm")
	}
}

// TestMakeTargets_StopBeforeAnyBuildWithTheAptLine runs make lab, make test
// and make bench with frr marked missing and installing turned off: each
// fails within 5 s, prints the apt-get line that fixes it, and runs no go
// command but the check (GO is a wrapper that records every call and
// refuses any other).
func TestMakeTargets_StopBeforeAnyBuildWithTheAptLine(t *testing.T) {
	realGo, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	wrapper := filepath.Join(dir, "go")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n" +
		"case \"$1 $2\" in \"run ./hack/prereq\") exec " + realGo + " \"$@\";; esac\n" +
		"echo \"go $* must not run before the check passes\" >&2\nexit 99\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	makeTarget := func(target string) (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", target, "GO="+wrapper)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "IRONLB_PREREQ_PRETEND_MISSING=frr", "IRONLB_PREREQ_INSTALL=no")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		began := time.Now()
		err := cmd.Run()
		return out.String(), time.Since(began), err
	}
	// The first run may compile the check; what a user waits for is a run after.
	if _, _, err := makeTarget("prereq"); err == nil {
		t.Fatal("make prereq passed with frr marked missing")
	}

	for _, target := range []string{"lab", "test", "bench"} {
		if err := os.Remove(calls); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		out, took, err := makeTarget(target)
		if err == nil {
			t.Fatalf("make %s passed with frr marked missing:\n%s", target, out)
		}
		if took > 5*time.Second {
			t.Errorf("make %s took %s to fail, want under 5 s", target, took)
		}
		if !strings.Contains(out, "apt-get install -y --no-install-recommends frr\n") {
			t.Errorf("make %s does not print the apt-get line that fixes it:\n%s", target, out)
		}
		if !strings.Contains(out, "frr (no /usr/lib/frr/bgpd)") {
			t.Errorf("make %s does not say what is missing:\n%s", target, out)
		}
		got, err := os.ReadFile(calls)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(string(got)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "run ./hack/prereq") {
			t.Errorf("make %s ran go %q, want only the check before it fails", target, lines)
		}
	}
}
