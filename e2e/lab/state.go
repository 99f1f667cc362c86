package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultStateRoot holds one directory per lab (its state, kubeconfigs, logs);
// IRONLB_LAB_DIR overrides it. It is in /run, so a reboot, which also removes
// every namespace, clears it.
const DefaultStateRoot = "/run/ironlb-lab"

func stateRoot(root string) string {
	if root != "" {
		return root
	}
	if env := os.Getenv("IRONLB_LAB_DIR"); env != "" {
		return env
	}
	return DefaultStateRoot
}

// State is what a lab records so that another process (lab down, lab
// status, the next up after a crash) can find and remove everything it made.
type State struct {
	Name      string      `json:"name"`
	Index     int         `json:"index"`
	Nodes     int         `json:"nodes"`
	Created   time.Time   `json:"created"`
	APIServer string      `json:"apiServer,omitempty"`
	Processes []Proc      `json:"processes,omitempty"`
	Endpoints []*Endpoint `json:"endpoints,omitempty"`

	// Kubelet: the full nodes run a kubelet and containerd (kubelet.go).
	Kubelet bool `json:"kubelet,omitempty"`
	// SpeakerOnlyNodes follow the Nodes full ones (scale.go).
	SpeakerOnlyNodes int `json:"speakerOnlyNodes,omitempty"`
}

// Proc is one process the lab started, identified by pid and start time so
// that a reused pid is never mistaken for it.
type Proc struct {
	Name       string   `json:"name"`
	Namespace  string   `json:"namespace,omitempty"` // "" for the root namespace
	Pid        int      `json:"pid"`
	StartTicks uint64   `json:"startTicks"`
	Log        string   `json:"log"`
	Bin        string   `json:"bin,omitempty"` // empty: cannot be restarted by the lab
	Args       []string `json:"args,omitempty"`
}

func readState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	return &s, nil
}

// writeState replaces the file whole, so a reader never sees half of it.
func writeState(dir string, s *State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

// lockRoot takes the state root's lock, which guards choosing an index.
func lockRoot(root string) (unlock func(), err error) {
	// FRR, which runs as user frr, must reach its files under it.
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || i >= 600 {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", root, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// otherLabs reads the states of every lab under root except name.
func otherLabs(root, name string) ([]*State, error) {
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var states []*State
	for _, e := range entries {
		if !e.IsDir() || e.Name() == name {
			continue
		}
		if s, err := readState(filepath.Join(root, e.Name())); err == nil {
			states = append(states, s)
		}
	}
	return states, nil
}

// freeIndex is the lowest index no other lab uses.
func freeIndex(others []*State) (int, error) {
	used := map[int]bool{}
	for _, s := range others {
		used[s.Index] = true
	}
	for i := 1; i <= MaxIndex; i++ {
		if !used[i] {
			return i, nil
		}
	}
	return 0, fmt.Errorf("all %d lab slots are taken: run lab down for one of them", MaxIndex)
}

// startTicks is field 22 of /proc/<pid>/stat, the process's start time.
// A zombie counts as gone once it is the last of its threads: the thread
// that leads a process turns zombie as soon as it exits, while its other
// threads may still be exiting and holding the process's files (a
// listening socket among them, so that a process started again at once
// would find its port still taken).
func startTicks(pid int) (uint64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces; fields after it follow ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false
	}
	if f[0] == "Z" || f[0] == "X" {
		if tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task"); err != nil || len(tasks) <= 1 {
			return 0, false
		}
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, err == nil
}

// alive reports whether the recorded process still runs.
func (p Proc) alive() bool {
	t, ok := startTicks(p.Pid)
	return ok && t == p.StartTicks
}

// stop sends SIGTERM to the process group the lab started (every process is
// a group leader), waits up to grace, then kills the group.
func (p Proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
	if waitGone(p, grace) {
		return
	}
	if p.alive() {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
	waitGone(p, 5*time.Second)
}

// kill kills the process group at once, as a crash or power loss would.
func (p Proc) kill() {
	if p.alive() {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
	waitGone(p, 5*time.Second)
}

func waitGone(p Proc, d time.Duration) bool {
	const poll = 20 * time.Millisecond
	for i := 0; i <= int(d/poll); i++ {
		if !p.alive() {
			return true
		}
		time.Sleep(poll)
	}
	return false
}

// killOne kills a single process found in a lab namespace that no record names.
func (p Proc) killOne() {
	if p.alive() {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
	waitGone(p, 2*time.Second)
}
