package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ironlb/ironlb/internal/testenv"
)

// start runs bin in namespace ns ("" for the root namespace) and records it.
// Processes of an attached lab die with this process; those of a detached
// lab (make lab) run on until lab down.
func (l *Lab) start(name, ns, bin string, args ...string) (Proc, error) {
	logPath := filepath.Join(l.dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return Proc{}, err
	}
	cmd, cmdArgs := bin, args
	if ns != "" {
		cmd, cmdArgs = "ip", append([]string{"netns", "exec", ns, bin}, args...)
	}
	startFn := testenv.StartDetached
	if l.cfg.Attached {
		startFn = testenv.StartProcess
	}
	p, err := startFn(name, cmd, logPath, cmdArgs...)
	if err != nil {
		return Proc{}, err
	}
	rec := Proc{Name: name, Namespace: ns, Pid: p.Pid(), Log: logPath, Bin: bin, Args: args}
	if t, ok := startTicks(rec.Pid); ok {
		rec.StartTicks = t
	}
	if err := l.record(rec); err != nil {
		rec.kill()
		return Proc{}, err
	}
	return rec, nil
}

// record adds or replaces the process named rec.Name in the state file.
func (l *Lab) record(rec Proc) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state.Processes = slices.DeleteFunc(l.state.Processes, func(p Proc) bool { return p.Name == rec.Name })
	l.state.Processes = append(l.state.Processes, rec)
	return writeState(l.dir, l.state)
}

// Proc returns the recorded process called name.
func (l *Lab) Proc(name string) (Proc, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.state.Processes {
		if p.Name == name {
			return p, true
		}
	}
	return Proc{}, false
}

// Processes lists every recorded process in start order.
func (l *Lab) Processes() []Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.state.Processes)
}

// Alive reports whether the process called name runs.
func (l *Lab) Alive(name string) bool {
	p, ok := l.Proc(name)
	return ok && p.alive()
}

// Stop stops the process called name with SIGTERM, killing it if it has not
// exited after grace. It stays recorded, so Restart can start it again.
func (l *Lab) Stop(name string, grace time.Duration) error {
	p, ok := l.Proc(name)
	if !ok {
		return fmt.Errorf("lab %s has no process %q", l.state.Name, name)
	}
	p.stop(grace)
	return nil
}

// Kill kills the process called name at once, as a crash would.
func (l *Lab) Kill(name string) error {
	p, ok := l.Proc(name)
	if !ok {
		return fmt.Errorf("lab %s has no process %q", l.state.Name, name)
	}
	p.kill()
	return nil
}

// Restart stops the process called name if it runs and starts it again with
// the same command line, appending to the same log.
func (l *Lab) Restart(name string) error {
	p, ok := l.Proc(name)
	if !ok {
		return fmt.Errorf("lab %s has no process %q", l.state.Name, name)
	}
	if p.Bin == "" {
		return fmt.Errorf("lab %s cannot restart %q", l.state.Name, name)
	}
	p.stop(5 * time.Second)
	_, err := l.start(p.Name, p.Namespace, p.Bin, p.Args...)
	return err
}

// forget drops the record of a stopped process.
func (l *Lab) forget(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state.Processes = slices.DeleteFunc(l.state.Processes, func(p Proc) bool { return p.Name == name })
	return writeState(l.dir, l.state)
}

// Alive reports whether the recorded process still runs.
func (p Proc) Alive() bool { return p.alive() }
