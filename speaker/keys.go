package speaker

import (
	"context"
	"errors"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/internal/clusterkey"
)

// keyWatch follows the one Secret that holds the cluster key: the speaker
// may read only that Secret, so it watches it by name.
type keyWatch struct {
	informer cache.SharedIndexInformer
	log      klog.Logger
	name     string

	mu      sync.Mutex
	keys    clusterkey.Keys
	problem error
	changed chan struct{}
}

func newKeyWatch(client kubernetes.Interface, namespace string, log klog.Logger) *keyWatch {
	k := &keyWatch{log: log, name: namespace + "/" + clusterkey.SecretName, changed: make(chan struct{}, 1),
		problem: errors.New("not read yet")}
	k.informer = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", clusterkey.SecretName).String()
		}),
	).Core().V1().Secrets().Informer()
	update := func(obj any) {
		s, _ := obj.(*v1.Secret)
		k.set(clusterkey.FromSecret(s))
	}
	_, _ = k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(any) { k.set(clusterkey.FromSecret(nil)) },
	})
	return k
}

// set records a new reading. A Secret that went wrong keeps the last good
// keys in use: heartbeats go on, and the problem is logged.
func (k *keyWatch) set(keys clusterkey.Keys, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.log.Error(err, "Cluster key Secret unusable; heartbeats keep the last good key", "secret", k.name)
		if k.keys.Sign == nil {
			k.problem = err
		}
		return
	}
	k.keys, k.problem = keys, nil
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// current returns the keys, or why there are none.
func (k *keyWatch) current() (clusterkey.Keys, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.problem
}

// wait returns the keys once the Secret holds usable ones, saying every 10 s
// what it waits for.
func (k *keyWatch) wait(ctx context.Context) (clusterkey.Keys, error) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		if keys, err := k.current(); err == nil {
			return keys, nil
		}
		select {
		case <-ctx.Done():
			return clusterkey.Keys{}, ctx.Err()
		case <-k.changed:
		case <-tick.C:
			_, err := k.current()
			k.log.Info("Waiting for the cluster key Secret (ironlb-ccm creates it); no L2 announcements until then", "secret", k.name, "problem", err)
		}
	}
}
