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
// BGPPeer of this node names it: at once, then every passwordRefresh, and
// again within passwordRetry when a session that uses it is not up. A
// sync only looks into what was read: it never waits for the API server,
// so a slow or failing read delays neither L2 work nor the other peers.

// passwordRefresh is how often a followed Secret is read again while its
// sessions are up; passwordRetry, at most how often while one is not (a
// rotated password: the router drops the session, and the speaker reads
// the Secret again).
const (
	passwordRefresh = 5 * time.Minute
	passwordRetry   = 10 * time.Second
)

// secretRef names a password Secret.
type secretRef struct{ namespace, name string }

func (r secretRef) String() string { return r.namespace + "/" + r.name }

// errPasswordPending: the Secret has not been read yet. The peer waits;
// the reader asks for a sync when it has read it.
var errPasswordPending = errors.New("not read yet")

// passwordSource is where the BGP announcer finds passwords.
type passwordSource interface {
	// follow reads exactly refs.
	follow(refs map[secretRef]bool)
	// refresh reads ref again soon: a session that uses it is not up.
	refresh(ref secretRef)
	// password is the password ref holds now, or why there is none.
	password(ref secretRef) (string, error)
	// stop ends every reading.
	stop()
}

// passwordReader reads password Secrets by name in the background.
type passwordReader struct {
	client  kubernetes.Interface
	own     string        // the speaker's namespace, the only one RBAC lets it read
	changed func()        // asks for a sync
	every   time.Duration // passwordRefresh but in tests
	retry   time.Duration // passwordRetry but in tests

	mu      sync.Mutex
	readers map[secretRef]*secretReading
}

// secretReading is one Secret's reader and what it last read.
type secretReading struct {
	done     chan struct{}
	again    chan struct{} // read now
	at       time.Time     // of the last read
	read     bool
	password string
	err      error
}

func newPasswordReader(client kubernetes.Interface, namespace string, changed func()) *passwordReader {
	return &passwordReader{client: client, own: namespace, changed: changed, every: passwordRefresh, retry: passwordRetry, readers: map[secretRef]*secretReading{}}
}

func (w *passwordReader) follow(refs map[secretRef]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ref, sw := range w.readers {
		if !refs[ref] {
			close(sw.done)
			delete(w.readers, ref)
		}
	}
	for ref := range refs {
		if w.readers[ref] == nil {
			w.readers[ref] = w.start(ref)
		}
	}
}

func (w *passwordReader) password(ref secretRef) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.readers[ref]
	if sw == nil || !sw.read {
		return "", errPasswordPending
	}
	return sw.password, sw.err
}

func (w *passwordReader) stop() { w.follow(nil) }

func (w *passwordReader) refresh(ref secretRef) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.readers[ref]
	if sw == nil || time.Since(sw.at) < w.retry {
		return
	}
	sw.at = time.Now() // one read per retry interval, however often asked
	select {
	case sw.again <- struct{}{}:
	default:
	}
}

// start reads ref now and every w.every until it is no longer
// followed. Called with w.mu held.
func (w *passwordReader) start(ref secretRef) *secretReading {
	sw := &secretReading{done: make(chan struct{}), again: make(chan struct{}, 1)}
	go func() {
		tick := time.NewTicker(w.every)
		defer tick.Stop()
		for {
			w.read(ref, sw)
			select {
			case <-sw.done:
				return
			case <-tick.C:
			case <-sw.again:
			}
		}
	}()
	return sw
}

// read gets ref once and records what it found. After a good read, a
// failure other than the Secret being gone keeps what was read: the API
// server may only be out of reach for a while.
func (w *passwordReader) read(ref secretRef, sw *secretReading) {
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
	if w.readers[ref] != sw || passing && sw.read && sw.err == nil {
		w.mu.Unlock()
		return // no longer followed, or a passing failure after a good read
	}
	sw.at = time.Now()
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
