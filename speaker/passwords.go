package speaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// BGP passwords are read from the Secrets that BGPPeers name, each by name
// (RBAC grants get in the speaker's namespace, no list or watch: the
// speaker cannot find out which Secrets exist) in the background while some
// BGPPeer of this node names it: at once, then every passwordRefresh. A
// sync only looks into what was read: it never waits for the API server,
// so a slow or failing read delays neither L2 work nor the other peers.

// passwordRefresh is how often a followed Secret is read again.
const passwordRefresh = 30 * time.Second

// secretRef names a password Secret.
type secretRef struct{ namespace, name string }

func (r secretRef) String() string { return r.namespace + "/" + r.name }

// errPasswordPending: the watch has not listed the Secret yet. The peer
// waits; the watch asks for a sync when it has.
var errPasswordPending = errors.New("not read yet")

// passwordSource is where the BGP announcer finds passwords.
type passwordSource interface {
	// follow watches exactly refs.
	follow(refs map[secretRef]bool)
	// password is the password ref holds now, or why there is none.
	password(ref secretRef) (string, error)
	// stop ends every watch.
	stop()
}

// passwordWatch reads password Secrets by name in the background.
type passwordWatch struct {
	client  kubernetes.Interface
	own     string        // the speaker's namespace, the only one RBAC lets it read
	changed func()        // asks for a sync
	every   time.Duration // passwordRefresh but in tests

	mu      sync.Mutex
	watches map[secretRef]*secretWatch
}

// secretWatch is one Secret's reader and what it last read.
type secretWatch struct {
	done     chan struct{}
	read     bool
	password string
	err      error
}

func newPasswordWatch(client kubernetes.Interface, namespace string, changed func()) *passwordWatch {
	return &passwordWatch{client: client, own: namespace, changed: changed, every: passwordRefresh, watches: map[secretRef]*secretWatch{}}
}

func (w *passwordWatch) follow(refs map[secretRef]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ref, sw := range w.watches {
		if !refs[ref] {
			close(sw.done)
			delete(w.watches, ref)
		}
	}
	for ref := range refs {
		if w.watches[ref] == nil {
			w.watches[ref] = w.start(ref)
		}
	}
}

func (w *passwordWatch) password(ref secretRef) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.watches[ref]
	if sw == nil || !sw.read {
		return "", errPasswordPending
	}
	return sw.password, sw.err
}

func (w *passwordWatch) stop() { w.follow(nil) }

// start reads ref now and every w.every until it is no longer
// followed. Called with w.mu held.
func (w *passwordWatch) start(ref secretRef) *secretWatch {
	sw := &secretWatch{done: make(chan struct{})}
	go func() {
		tick := time.NewTicker(w.every)
		defer tick.Stop()
		for {
			w.read(ref, sw)
			select {
			case <-sw.done:
				return
			case <-tick.C:
			}
		}
	}()
	return sw
}

// read gets ref once and records what it found. After a good read, a
// failure other than the Secret being gone keeps what was read: the API
// server may only be out of reach for a while.
func (w *passwordWatch) read(ref secretRef, sw *secretWatch) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pw string
	s, err := w.client.CoreV1().Secrets(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
	// A failure to reach or ask the API server, not an answer about the Secret.
	passing := err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err)
	switch {
	case err == nil:
		pw, err = passwordOf(ref, s)
	case apierrors.IsNotFound(err):
		err = fmt.Errorf("Secret %s not found", ref)
	case apierrors.IsForbidden(err):
		err = fmt.Errorf("ironlb-speaker may not read it (it reads password Secrets by name in %s only; see the RBAC in deploy/): %w", w.own, err)
	}
	w.mu.Lock()
	if w.watches[ref] != sw || passing && sw.read && sw.err == nil {
		w.mu.Unlock()
		return // no longer followed, or a passing failure after a good read
	}
	changed := !sw.read || sw.password != pw || fmt.Sprint(sw.err) != fmt.Sprint(err)
	sw.read, sw.password, sw.err = true, pw, err
	w.mu.Unlock()
	if changed {
		w.changed()
	}
}

// passwordOf reads the "password" key of s.
func passwordOf(ref secretRef, s *v1.Secret) (string, error) {
	pw, ok := s.Data["password"]
	if !ok {
		return "", fmt.Errorf("Secret %s has no key \"password\"", ref)
	}
	return string(pw), nil
}
