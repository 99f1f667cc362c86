package netnstest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(5*time.Second, func() bool { n++; return n == 3 }) {
		t.Errorf("Poll gave up after %d checks of a condition that held at the third", n)
	}
	start := time.Now()
	if Poll(120*time.Millisecond, func() bool { return false }) {
		t.Error("Poll reported a condition that never held")
	}
	if d := time.Since(start); d < 120*time.Millisecond || d > 2*time.Second {
		t.Errorf("Poll with a timeout of 120ms took %v", d)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, "third check", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 {
		t.Errorf("WaitFor checked %d times, want 3", n)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "desired")
	for _, content := range []string{"1\n", "2\nmore\n"} {
		WriteFileAtomic(t, path, []byte(content))
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("file holds %q (%v), want %q", b, err, content)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestRun(t *testing.T) {
	out, err := Run("sh", "-c", "echo out; echo err >&2; exit 3")
	if err == nil || out != "out\nerr\n" {
		t.Errorf("Run: output %q, error %v; want both streams and the exit status", out, err)
	}
}
