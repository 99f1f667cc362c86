package testenv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/ironlb/ironlb/internal/upstream"
)

// buildProgress tells someone waiting for the upstream build that it moves:
// modules downloaded, packages compiled out of the total, elapsed time, the
// binary that comes next and those that are ready. On a terminal it redraws
// one line every second; elsewhere (CI logs) it prints a line every
// nonTTYEvery.
type buildProgress struct {
	out   io.Writer
	tty   bool
	width int // of the terminal, 0 if unknown
	began time.Time
	bins  []upstream.Binary

	mu        sync.Mutex
	downloads int
	deps      map[string][]string // binary's package -> the packages it is built from
	total     map[string]bool     // every package of every binary
	done      map[string]bool     // compiled so far
	ready     map[string]bool     // binaries written by go build
	lastPrint time.Time
	onScreen  bool // a redrawn line waits for its newline
}

const nonTTYEvery = 30 * time.Second

func newBuildProgress(out io.Writer, tty bool, bins []upstream.Binary) *buildProgress {
	p := &buildProgress{out: out, tty: tty, began: time.Now(), bins: bins, done: map[string]bool{}, ready: map[string]bool{}}
	p.lastPrint = p.began
	if f, ok := out.(*os.File); ok && tty {
		p.width = termWidth(f)
	}
	return p
}

// downloaded counts one module that go list downloaded.
func (p *buildProgress) downloaded() {
	p.mu.Lock()
	p.downloads++
	p.mu.Unlock()
}

// setDeps gives the packages each binary is built from, as go list -deps
// lists them. unsafe is listed but never compiled.
func (p *buildProgress) setDeps(deps map[string][]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deps, p.total = deps, map[string]bool{}
	for _, pkgs := range deps {
		for _, pkg := range pkgs {
			if pkg != "unsafe" {
				p.total[pkg] = true
			}
		}
	}
}

// compiled records a line of go build -v; it says whether the line named a
// package of the build.
func (p *buildProgress) compiled(line string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.total[line] {
		return false
	}
	p.done[line] = true
	return true
}

// run checks every second which binaries go build has written into dir and
// shows the progress. The returned stop ends that, once.
func (p *buildProgress) run(dir string) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				for _, b := range p.bins {
					if _, err := os.Stat(filepath.Join(dir, binaryName(b.Pkg))); err == nil {
						p.mu.Lock()
						p.ready[b.Name] = true
						p.mu.Unlock()
					}
				}
				p.tick(now)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-finished
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.onScreen {
				fmt.Fprintln(p.out)
				p.onScreen = false
			}
		})
	}
}

// tick shows the progress at now: a redrawn line on a terminal, otherwise a
// new line when nonTTYEvery has passed since the last.
func (p *buildProgress) tick(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := p.line(now)
	if p.tty {
		if p.width > 1 && len(line) >= p.width {
			line = line[:p.width-1]
		}
		fmt.Fprintf(p.out, "\r%s\x1b[K", line)
		p.onScreen = true
		return
	}
	if now.Sub(p.lastPrint) >= nonTTYEvery {
		fmt.Fprintln(p.out, line)
		p.lastPrint = now
	}
}

// line is the progress at now, in one line.
func (p *buildProgress) line(now time.Time) string {
	elapsed := now.Sub(p.began).Round(time.Second)
	if p.total == nil {
		return fmt.Sprintf("upstream: %s; resolving modules (go list -deps), %d downloaded", elapsed, p.downloads)
	}
	s := fmt.Sprintf("upstream: %s; %d/%d packages compiled (%d%%)", elapsed, len(p.done), len(p.total), 100*len(p.done)/max(len(p.total), 1))
	var ready, linking []string
	next, nextDone, nextAll := "", -1, 0
	for _, b := range p.bins {
		switch {
		case p.ready[b.Name]:
			ready = append(ready, b.Name)
		case p.done[b.Pkg]:
			// Its own package is compiled last: what is left is the link.
			linking = append(linking, b.Name)
		default:
			n, all := 0, 0
			for _, d := range p.deps[b.Pkg] {
				if p.total[d] {
					all++
				}
				if p.done[d] {
					n++
				}
			}
			if nextDone < 0 || n*max(nextAll, 1) > nextDone*max(all, 1) {
				next, nextDone, nextAll = b.Name, n, all
			}
		}
	}
	if len(linking) > 0 {
		s += "; linking " + strings.Join(linking, ", ")
	}
	if next != "" {
		s += fmt.Sprintf("; next: %s (%d of its %d packages compiled)", next, nextDone, nextAll)
	}
	if len(ready) > 0 {
		s += "; ready: " + strings.Join(ready, ", ")
	}
	return s
}

// summary says what was built, how long it took and where the caches are.
func (p *buildProgress) summary(dir, goCache string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, b := range p.bins {
		names = append(names, b.Name)
	}
	cached := 0
	for pkg := range p.total {
		if !p.done[pkg] {
			cached++
		}
	}
	s := fmt.Sprintf("upstream: built %s in %s: %d packages compiled, %d taken from the Go build cache\n",
		strings.Join(names, ", "), time.Since(p.began).Round(time.Second), len(p.done), cached)
	s += fmt.Sprintf("upstream: binaries cached in %s", dir)
	if goCache != "" {
		s += fmt.Sprintf(", compiled packages in %s (go env GOCACHE)", goCache)
	}
	return s + "; later runs reuse them\n"
}

// isTerminal says whether f is a terminal that can redraw a line.
func isTerminal(f *os.File) bool {
	if os.Getenv("TERM") == "dumb" {
		return false
	}
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// termWidth is f's width in columns, 0 if unknown.
func termWidth(f *os.File) int {
	var ws struct{ rows, cols, x, y uint16 }
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws))); errno != 0 {
		return 0
	}
	return int(ws.cols)
}
