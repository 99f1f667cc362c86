package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// An IPPool carries the finalizer ironlb.io/pool-protection while its settings announce the
// address of some Service (ipam.Allocator.PoolUsers), like a PersistentVolumeClaim in use: a
// pool deleted meanwhile stays, being deleted, with the settings the speakers announce those
// addresses with, until the last of them is released or moved to another pool. A pool that
// announces nothing has no finalizer, so deleting it (or uninstalling ironlb once its Services
// are gone) never waits for ironlb-ccm.
//
// The finalizer is put on before an address the pool announces is published (protect), and
// taken off by the status writer (reconcileFinalizer), which counts the pool's users again under
// the same lock first: an address handed out meanwhile either is counted, or is published after
// the removal and puts the finalizer back.
//
// A pool can be deleted in the moment between its first address being handed out and the
// finalizer landing, before the informer shows the deletion: the API server then refuses the
// finalizer (no new finalizers on an object being deleted; a pool that is gone cannot be given
// one). protect then reports errPoolGoing, and the service controller gives the address back
// unpublished: the next try, once the informer shows the pool going, takes an address from
// another pool, or waits. An address is never published from a pool that could not be protected
// because it was going.

// errPoolGoing says that a pool could not be protected because it is gone or being deleted.
var errPoolGoing = errors.New("the IPPool is gone or being deleted")

// finalizerChange is what to do with a pool's finalizer.
type finalizerChange int

const (
	finalizerKept finalizerChange = iota
	finalizerAdded
	finalizerRemoved
)

// protectionFor decides a pool's finalizer from whether it has it, whether the pool is being
// deleted, and how many Services it announces: on while there is one, off otherwise. A pool being
// deleted cannot be given a finalizer; one that has it keeps it while it announces any address.
func protectionFor(has, deleting bool, users int) finalizerChange {
	switch {
	case users > 0 && !has && !deleting:
		return finalizerAdded
	case users == 0 && has:
		return finalizerRemoved
	}
	return finalizerKept
}

// poolProtection remembers the finalizer changes ironlb-ccm wrote until the informer shows them,
// so that a cache that lags neither hides a removal nor asks for an addition twice.
type poolProtection struct {
	mu        sync.Mutex
	written   map[types.UID]bool // by pool UID: true when the finalizer was put on, false when taken off
	forbidden bool               // RBAC refused a change, which was logged
}

// has reports whether the pool carries the finalizer, as far as ironlb-ccm knows. Call with mu held.
func (pp *poolProtection) has(uid types.UID, finalizers []string) bool {
	cached := slices.Contains(finalizers, v1alpha1.PoolProtectionFinalizer)
	w, ok := pp.written[uid]
	if !ok {
		return cached
	}
	if w == cached {
		delete(pp.written, uid) // the cache caught up
	}
	return w
}

// cachedPool is the pool named as the informer has it, or nil.
func (c *PoolController) cachedPool(name string) *unstructured.Unstructured {
	obj, exists, err := c.informer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return nil
	}
	return obj.(*unstructured.Unstructured)
}

// protect puts the finalizer on the pool named, unless it has it, before an address the pool
// announces is published. A pool that is unknown or being deleted is left as it is: one cannot
// be given a finalizer, and the other has it if it announced any address.
func (c *PoolController) protect(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	c.protection.mu.Lock()
	defer c.protection.mu.Unlock()
	obj := c.cachedPool(name)
	if obj == nil || obj.GetDeletionTimestamp() != nil || c.protection.has(obj.GetUID(), obj.GetFinalizers()) {
		return nil
	}
	return c.setFinalizer(ctx, obj.GetName(), obj.GetUID(), obj.GetFinalizers(), true)
}

// reconcileFinalizer brings the pool's finalizer in line with the number of Services it announces.
func (c *PoolController) reconcileFinalizer(ctx context.Context, p *v1alpha1.IPPool, users int) error {
	c.protection.mu.Lock()
	defer c.protection.mu.Unlock()
	has := c.protection.has(p.UID, p.Finalizers)
	change := protectionFor(has, p.DeletionTimestamp != nil, users)
	if change == finalizerRemoved {
		// Counted again under the lock that protect takes: see the comment at the top.
		change = protectionFor(has, p.DeletionTimestamp != nil, c.cloud.alloc.PoolUsers()[p.Name].Count)
	}
	if change == finalizerKept {
		return nil
	}
	return c.setFinalizer(ctx, p.Name, p.UID, p.Finalizers, change == finalizerAdded)
}

// poolGoing decides from a fresh read of a pool (live, or the error of the read) whether the pool
// that had the UID uid is gone or being deleted. A read that failed otherwise says nothing.
func poolGoing(live *unstructured.Unstructured, getErr error, uid types.UID) bool {
	switch {
	case apierrors.IsNotFound(getErr):
		return true
	case getErr != nil:
		return false
	}
	return live.GetUID() != uid || live.GetDeletionTimestamp() != nil
}

// setFinalizer puts ironlb's finalizer on the pool (on) or takes it off, given the pool's UID and
// finalizers as cached. Putting it on is a server-side apply under ironlb-ccm's field manager,
// which leaves other finalizers alone and needs no current copy. Taking it off removes it by
// position after checking it is still there, whoever else lists it too (a copy of the pool
// applied from a backup, say), so that it never keeps a pool from going.
func (c *PoolController) setFinalizer(ctx context.Context, name string, uid types.UID, cached []string, on bool) error {
	pools := c.client.Resource(v1alpha1.IPPoolResource)
	var err error
	if on {
		// The UID makes the apply fail on a pool of the same name created since; and ironlb-ccm
		// may not create pools, so an apply never makes one that was deleted meanwhile.
		obj := &unstructured.Unstructured{}
		obj.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
		obj.SetKind("IPPool")
		obj.SetName(name)
		obj.SetUID(uid)
		obj.SetFinalizers([]string{v1alpha1.PoolProtectionFinalizer})
		_, err = pools.Apply(ctx, name, obj, applyOptions)
	} else {
		i := slices.Index(cached, v1alpha1.PoolProtectionFinalizer)
		patch, _ := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/uid", "value": uid},
			{"op": "test", "path": fmt.Sprintf("/metadata/finalizers/%d", i), "value": v1alpha1.PoolProtectionFinalizer},
			{"op": "remove", "path": fmt.Sprintf("/metadata/finalizers/%d", i)},
		})
		_, err = pools.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: v1alpha1.FieldManagerCCM})
	}
	if err != nil {
		what := "remove the finalizer of"
		if on {
			what = "add the finalizer to"
			// Refused because the pool is going (see the comment at the top)? Asked before the
			// RBAC check below: a pool that is gone refuses an apply as a create, forbidden.
			live, getErr := pools.Get(ctx, name, metav1.GetOptions{})
			if poolGoing(live, getErr, uid) {
				return fmt.Errorf("%s IPPool %s: %w (%v)", what, name, errPoolGoing, err)
			}
		}
		err = fmt.Errorf("%s IPPool %s: %w", what, name, err)
		if apierrors.IsForbidden(err) {
			// RBAC older than this ironlb-ccm: serve addresses as before, unprotected, and say
			// so once rather than hold up every Service or retry twice a second.
			if !c.protection.forbidden {
				klog.FromContext(ctx).Error(err, "IPPools are not protected from deletion while they announce addresses; grant ironlb-ccm patch on ippools")
				c.protection.forbidden = true
			}
			return nil
		}
		return err
	}
	c.protection.written[uid] = on
	klog.FromContext(ctx).V(2).Info("IPPool finalizer", "pool", name, "on", on)
	return nil
}
