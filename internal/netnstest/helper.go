package netnstest

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const (
	// HelperLifetime bounds a helper even if nobody stops it.
	HelperLifetime = 2 * time.Minute
	// StopGrace is how long a stopped helper has to exit before it is
	// killed.
	StopGrace = 10 * time.Second
)

// HelperConfig says which helper to start where.
type HelperConfig struct {
	// Namespace is the network namespace the helper runs in.
	Namespace string
	// Test is the test function of the helper, e.g. TestHelperManager: it
	// is run alone (-test.run=^Test$ -test.count=1). It should find its
	// instructions in Env, and do nothing without them.
	Test string
	// Env is added to this process's environment for the helper.
	Env []string
	// Args are further flags for the helper, e.g. -test.v.
	Args []string
	// LogPath is the file for the helper's standard error; "" puts it in
	// helper.log in a new t.TempDir().
	LogPath string
}

// Helper is a copy of the test binary running one test function in a
// network namespace: a socket belongs to the namespace of the thread that
// opens it, and a whole process in the namespace keeps every thread the code
// under test may use there. The helper reads its instructions from a file
// the test rewrites (WriteFileAtomic), answers on its standard output, one
// line at a time (WaitLine), and ends when its standard input closes (Stop,
// or this process dying): see HelperContext.
type Helper struct {
	// LogPath is the helper's standard error.
	LogPath string

	cmd   *exec.Cmd
	stdin io.Closer
	lines chan string // its standard output, closed at EOF
	done  chan struct{}
}

// StartHelper starts the helper c describes. When t ends the helper is
// stopped, and its log is written to t's if t failed; a caller who wants
// Stop's result registers its own t.Cleanup after StartHelper, which runs
// first.
func StartHelper(t testing.TB, c HelperConfig) *Helper {
	t.Helper()
	exe, err := os.Executable() // not /proc/self/exe: ip would resolve that to itself
	if err != nil {
		t.Fatal(err)
	}
	if c.LogPath == "" {
		c.LogPath = filepath.Join(t.TempDir(), "helper.log")
	}
	h := &Helper{LogPath: c.LogPath, lines: make(chan string, 100), done: make(chan struct{})}
	logFile, err := os.Create(h.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := append([]string{"netns", "exec", c.Namespace, exe, "-test.run=^" + c.Test + "$", "-test.count=1"}, c.Args...)
	h.cmd = exec.Command("ip", args...)
	h.cmd.Env = append(os.Environ(), c.Env...)
	h.cmd.Stderr = logFile
	stdin, err := h.cmd.StdinPipe() // the helper stops when this closes, also if this process dies
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdin = stdin
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			h.lines <- s.Text()
		}
	}()
	t.Cleanup(func() {
		_, _ = h.Stop(t)
		if t.Failed() {
			log, _ := os.ReadFile(h.LogPath)
			t.Logf("helper log:\n%s", log)
		}
	})
	return h
}

// WaitLine waits for the helper to print the line want, and fails t if it
// does not within timeout or exits first. Lines before it are dropped.
func (h *Helper) WaitLine(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited before printing %q", want)
			}
			if line == want {
				return
			}
		case <-deadline:
			t.Fatalf("helper did not print %q within %v", want, timeout)
		}
	}
}

// Stop stops the helper, once: it closes the helper's standard input and
// collects what it prints until it exits. A helper that does not exit
// within StopGrace is killed, and t fails. Stop returns the lines and the
// helper's exit error; later calls return nil and nil.
func (h *Helper) Stop(t testing.TB) ([]string, error) {
	select {
	case <-h.done:
		return nil, nil
	default:
	}
	defer close(h.done)
	_ = h.stdin.Close()
	var lines []string
	deadline := time.After(StopGrace)
read:
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				break read
			}
			lines = append(lines, line)
		case <-deadline:
			t.Errorf("helper did not exit within %v of being stopped; killing it", StopGrace)
			_ = h.cmd.Process.Kill()
			break read
		}
	}
	return lines, h.cmd.Wait()
}

// HelperContext is, in a helper, the context to run under: it ends when the
// helper's standard input closes, as Stop or the test's end closes it, or
// after HelperLifetime.
func HelperContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), HelperLifetime)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, cancel
}
