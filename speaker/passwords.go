package speaker

import (
	"errors"
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// BGP passwords are read from the Secrets that BGPPeers name, each watched
// by name (field selector metadata.name, which RBAC can limit to those
// names) while some BGPPeer of this node names it. A sync only looks into
// what the watches hold: it never waits for the API server, so a slow or
// failing read delays neither L2 work nor the other peers.

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

// passwordWatch watches password Secrets by name.
type passwordWatch struct {
	client  kubernetes.Interface
	own     string // the speaker's namespace, the only one RBAC lets it read
	changed func() // asks for a sync

	mu      sync.Mutex
	watches map[secretRef]*secretWatch
}

// secretWatch is one Secret's watch and what it last saw.
type secretWatch struct {
	done     chan struct{}
	read     bool
	password string
	err      error
}

func newPasswordWatch(client kubernetes.Interface, namespace string, changed func()) *passwordWatch {
	return &passwordWatch{client: client, own: namespace, changed: changed, watches: map[secretRef]*secretWatch{}}
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

// start watches ref. Called with w.mu held.
func (w *passwordWatch) start(ref secretRef) *secretWatch {
	sw := &secretWatch{done: make(chan struct{})}
	inf := coreinformers.NewFilteredSecretInformer(w.client, ref.namespace, 0, cache.Indexers{}, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.name).String()
	})
	// set records a reading; unlessRead only when nothing was read before.
	set := func(pw string, err error, unlessRead bool) {
		w.mu.Lock()
		if w.watches[ref] != sw || (unlessRead && sw.read) {
			w.mu.Unlock()
			return // no longer followed, or an event came first
		}
		changed := !sw.read || sw.password != pw || fmt.Sprint(sw.err) != fmt.Sprint(err)
		sw.read, sw.password, sw.err = true, pw, err
		w.mu.Unlock()
		if changed {
			w.changed()
		}
	}
	update := func(obj any) {
		if s, ok := obj.(*v1.Secret); ok && s.Name == ref.name {
			pw, err := passwordOf(ref, s)
			set(pw, err, false)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(obj any) {
			if s, ok := unwrap(obj).(*v1.Secret); ok && s.Name == ref.name {
				set("", fmt.Errorf("Secret %s was deleted", ref), false)
			}
		},
	})
	// After a good read the informer keeps what it has while it retries;
	// only a Secret never read reports the error.
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if inf.HasSynced() {
			return
		}
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("ironlb-speaker may not read it (it reads password Secrets by name in %s only; see the RBAC in deploy/): %w", w.own, err)
		}
		set("", err, false)
	})
	go inf.Run(sw.done)
	go func() {
		if !cache.WaitForCacheSync(sw.done, inf.HasSynced) {
			return
		}
		if _, exists, _ := inf.GetStore().GetByKey(ref.String()); !exists {
			set("", fmt.Errorf("Secret %s not found", ref), true)
		}
	}()
	return sw
}

// passwordOf reads the "password" key of s.
func passwordOf(ref secretRef, s *v1.Secret) (string, error) {
	pw, ok := s.Data["password"]
	if !ok {
		return "", fmt.Errorf("Secret %s has no key \"password\"", ref)
	}
	return string(pw), nil
}
