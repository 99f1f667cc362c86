package testenv

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/internal/upstream"
)

func fakeBuild(out *bytes.Buffer, tty bool) *buildProgress {
	p := newBuildProgress(out, tty, []upstream.Binary{{Name: "apiserver", Pkg: "x/apiserver"}, {Name: "etcd", Pkg: "x/etcd"}})
	p.downloaded()
	p.downloaded()
	return p
}

func TestBuildProgress_CountsCompiledPackagesAgainstGoListAndNamesTheNextBinary(t *testing.T) {
	var out bytes.Buffer
	p := fakeBuild(&out, false)
	if got := p.line(p.began.Add(5 * time.Second)); !strings.Contains(got, "resolving modules") || !strings.Contains(got, "2 downloaded") {
		t.Fatalf("before go list answered: %q", got)
	}
	p.setDeps(map[string][]string{
		"x/apiserver": {"x/apiserver", "runtime", "unsafe", "x/a", "x/b", "x/c"},
		"x/etcd":      {"x/etcd", "runtime", "unsafe", "x/e"},
	})
	for _, pkg := range []string{"runtime", "x/e", "x/a", "x/etcd"} {
		if !p.compiled(pkg) {
			t.Fatalf("%s is a package of the build", pkg)
		}
	}
	if p.compiled("# x/a") || p.compiled("x/a/foo.go:3:1: syntax error") {
		t.Fatal("an error line counted as a compiled package")
	}
	got := p.line(p.began.Add(90 * time.Second))
	for _, want := range []string{"1m30s", "4/7 packages compiled (57%)", "linking etcd", "next: apiserver (2 of its 5 packages compiled)"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress %q lacks %q", got, want)
		}
	}

	p.ready["etcd"] = true
	if got := p.line(p.began.Add(91 * time.Second)); !strings.Contains(got, "ready: etcd") || strings.Contains(got, "linking") {
		t.Errorf("after etcd was written: %q", got)
	}
	sum := p.summary("/cache/k8s", "/gocache")
	for _, want := range []string{"built apiserver, etcd", "4 packages compiled, 3 taken from the Go build cache", "/cache/k8s", "/gocache"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
}

func TestBuildProgress_WithoutTerminalPrintsALineEvery30s(t *testing.T) {
	var out bytes.Buffer
	p := fakeBuild(&out, false)
	for s := 1; s <= 95; s++ {
		p.tick(p.began.Add(time.Duration(s) * time.Second))
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || strings.Contains(out.String(), "\r") {
		t.Fatalf("95 s without a terminal printed %d lines, want 3 plain ones: %q", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "upstream: 30s;") || !strings.HasPrefix(lines[2], "upstream: 1m30s;") {
		t.Errorf("lines not 30 s apart: %q", lines)
	}
}

func TestBuildProgress_OnATerminalRedrawsOneLine(t *testing.T) {
	var out bytes.Buffer
	p := fakeBuild(&out, true)
	p.width = 40
	stop := p.run(t.TempDir())
	for s := 1; s <= 3; s++ {
		p.tick(p.began.Add(time.Duration(s) * time.Second))
	}
	stop()
	stop()
	got := out.String()
	if n := strings.Count(got, "\r"); n < 3 {
		t.Fatalf("%d redraws in %q, want at least 3", n, got)
	}
	if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
		t.Fatalf("a terminal should get one line, ended once: %q", got)
	}
	for _, l := range strings.Split(got, "\r")[1:] {
		if l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\x1b[K"); len(l) >= 40 {
			t.Errorf("redrawn line %q is wider than the terminal", l)
		}
	}
}
