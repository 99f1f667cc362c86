package clusterkey

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Reasons of the events the Keeper records on the Secret.
const (
	ReasonCreated = "ClusterKeyCreated"
	ReasonInvalid = "InvalidClusterKey"
)

// NewInformer watches the one Secret in namespace. It lists and watches with
// the field selector metadata.name=SecretName: RBAC grants ironlb's
// components list and watch on that name only (resourceNames), which the API
// server applies to a list or watch only when the request names the object
// this way.
func NewInformer(client kubernetes.Interface, namespace string) cache.SharedIndexInformer {
	return informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", SecretName).String()
		}),
	).Core().V1().Secrets().Informer()
}

// Keeper keeps the Secret in place: it creates it with a new random key when
// it is missing, at start and whenever it is deleted (it watches it).
//
// It only ever creates: it never updates or deletes the Secret, so a key an
// operator brings, or one in the middle of a rotation, is never replaced, and
// two replicas that both find it missing cannot end with two keys (the API
// server takes the first create and refuses the other with AlreadyExists). A
// Secret that is there but unusable is left alone and reported: an error log
// and a Warning event on the Secret, once per version of it.
type Keeper struct {
	client    kubernetes.Interface
	namespace string
	recorder  record.EventRecorder
	informer  cache.SharedIndexInformer
	queue     workqueue.TypedRateLimitingInterface[string]
	// reported is the resourceVersion of the last Secret reported as unusable.
	reported string
}

// NewKeeper returns a Keeper of the Secret in namespace; recorder records its
// events on the Secret.
func NewKeeper(client kubernetes.Interface, namespace string, recorder record.EventRecorder) *Keeper {
	k := &Keeper{
		client:    client,
		namespace: namespace,
		recorder:  recorder,
		informer:  NewInformer(client, namespace),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 2*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-cluster-key"}),
	}
	// One object, one key: every event means "look again".
	enqueue := func(any) { k.queue.Add(SecretName) }
	_, _ = k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, cur any) { enqueue(cur) },
		DeleteFunc: enqueue,
	})
	return k
}

// Run keeps the Secret until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	defer k.queue.ShutDown()
	go k.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		return
	}
	// Missing at start: no event comes, so look once.
	k.queue.Add(SecretName)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for k.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
}

func (k *Keeper) next(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx); err != nil {
		klog.ErrorS(err, "Cluster key Secret: will retry", "secret", klog.KRef(k.namespace, SecretName))
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

func (k *Keeper) sync(ctx context.Context) error {
	obj, exists, err := k.informer.GetStore().GetByKey(k.namespace + "/" + SecretName)
	if err != nil {
		return err
	}
	if exists {
		k.check(obj.(*v1.Secret))
		return nil
	}
	data, err := Generate()
	if err != nil {
		return err
	}
	s := &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      SecretName,
			Namespace: k.namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "ironlb"},
		},
		Type: v1.SecretTypeOpaque,
		Data: data,
	}
	created, err := k.client.CoreV1().Secrets(k.namespace).Create(ctx, s, metav1.CreateOptions{FieldManager: "ironlb-ccm"})
	if apierrors.IsAlreadyExists(err) {
		// Another replica, or an operator, was first; the watch brings theirs.
		klog.V(2).InfoS("Cluster key Secret exists already", "secret", klog.KRef(k.namespace, SecretName))
		return nil
	}
	if err != nil {
		return fmt.Errorf("create secret %s/%s: %w", k.namespace, SecretName, err)
	}
	klog.InfoS("Created the cluster key Secret", "secret", klog.KObj(created), "bytes", len(data[DataKey]))
	k.recorder.Eventf(created, v1.EventTypeNormal, ReasonCreated,
		"ironlb-ccm created the cluster key the speakers sign heartbeats with (%d random bytes in %q)", len(data[DataKey]), DataKey)
	return nil
}

// check reports an unusable Secret, once per version of it.
func (k *Keeper) check(s *v1.Secret) {
	_, err := FromSecret(s)
	if err == nil || s.ResourceVersion == k.reported {
		return
	}
	k.reported = s.ResourceVersion
	const todo = "ironlb-ccm leaves it alone: fix its data, or delete it to have ironlb-ccm create a new key"
	klog.ErrorS(err, "The cluster key Secret is unusable; "+todo, "secret", klog.KObj(s))
	k.recorder.Eventf(s, v1.EventTypeWarning, ReasonInvalid, "%v; %s", err, todo)
}
