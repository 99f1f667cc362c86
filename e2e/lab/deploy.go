package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/ironlb/ironlb/internal/testenv"
)

// The lab installs ironlb's CRDs, namespace, ServiceAccounts and RBAC from
// the kustomization users apply, and runs ironlb-ccm and every speaker as
// those ServiceAccounts with the flags of the Deployment and DaemonSet
// there: what works in the lab works with what deploy/ grants.
const (
	// DeployDir is the kustomization the lab installs from, relative to the
	// repository root.
	DeployDir = "deploy/default"
	// Namespace is where ironlb runs.
	Namespace = "ironlb-system"
	// CCMAccount and SpeakerAccount are the components' ServiceAccounts.
	CCMAccount     = "ironlb-ccm"
	SpeakerAccount = "ironlb-speaker"

	fieldManager = "ironlb-lab"
	// tokenLifetime outlasts any lab; tokens are not renewed.
	tokenLifetime = 30 * 24 * 3600
)

// identityKinds are what the lab applies of deploy/ first, and all of it
// with process nodes (no kubelet runs workloads there: the lab runs the
// binaries itself). Real nodes get the rest too (installWorkloads).
var identityKinds = []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// Render builds a kustomization of the repository (e.g. "deploy/default")
// as `kubectl apply -k` does, with the kustomize that kubectl embeds.
func Render(dir string) ([]*unstructured.Unstructured, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		// Through JSON: kustomize's own maps hold Go ints, which unstructured
		// helpers do not take.
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", dir, err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(b); err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", dir, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// deployObjects is deploy/default, rendered once per process (read only).
var deployObjects = sync.OnceValues(func() ([]*unstructured.Unstructured, error) { return Render(DeployDir) })

// installDeploy applies the CRDs, namespace, ServiceAccounts, RBAC and admission policies of
// deploy/default (server-side, CRDs first) and writes a kubeconfig with a
// ServiceAccount token for each component.
func (l *Lab) installDeploy(ctx context.Context) error {
	objs, err := deployObjects()
	if err != nil {
		return err
	}
	for _, kinds := range [][]string{identityKinds[:1], identityKinds[1:]} {
		if err := l.apply(ctx, objs, func(kind string) bool { return slices.Contains(kinds, kind) }); err != nil {
			return err
		}
	}
	for _, sa := range []string{CCMAccount, SpeakerAccount} {
		if err := l.writeAccountKubeconfig(ctx, sa); err != nil {
			return err
		}
	}
	return nil
}

// apply applies the objects whose kind wants says yes to (server-side, as
// kubectl apply --server-side does), waiting until each CRD is established.
func (l *Lab) apply(ctx context.Context, objs []*unstructured.Unstructured, wants func(kind string) bool) error {
	dc, err := discovery.NewDiscoveryClientForConfig(l.RESTConfig)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	for _, obj := range objs {
		if !wants(obj.GetKind()) {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = l.Dynamic.Resource(m.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = l.Dynamic.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s from %s: %w", gvk.Kind, obj.GetName(), DeployDir, err)
		}
		if gvk.Kind == "CustomResourceDefinition" {
			if err := testenv.WaitEstablished(ctx, l.Dynamic, obj.GetName()); err != nil {
				return err
			}
		}
	}
	return nil
}

// installWorkloads applies the rest of deploy/default on real nodes (the
// Deployment and DaemonSet among it, unchanged) and waits until every
// ironlb-ccm and ironlb-speaker pod is Ready.
func (l *Lab) installWorkloads(ctx context.Context) error {
	objs, err := deployObjects()
	if err != nil {
		return err
	}
	if err := l.apply(ctx, objs, func(kind string) bool { return !slices.Contains(identityKinds, kind) }); err != nil {
		return err
	}
	return l.WaitRolledOut(ctx, 3*time.Minute)
}

// WaitRolledOut waits until the ironlb-ccm Deployment and the
// ironlb-speaker DaemonSet have every pod of their current template Ready.
func (l *Lab) WaitRolledOut(ctx context.Context, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := l.Client.AppsV1().Deployments(Namespace).Get(ctx, CCMAccount, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ds, err := l.Client.AppsV1().DaemonSets(Namespace).Get(ctx, SpeakerAccount, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		last = fmt.Sprintf("Deployment %s: %d of %d updated and ready (generation %d observed %d); DaemonSet %s: %d of %d updated, %d ready (generation %d observed %d)",
			CCMAccount, d.Status.UpdatedReplicas, want, d.Generation, d.Status.ObservedGeneration,
			SpeakerAccount, ds.Status.UpdatedNumberScheduled, ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Generation, ds.Status.ObservedGeneration)
		return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == want && d.Status.ReadyReplicas == want && d.Status.Replicas == want &&
			ds.Status.ObservedGeneration == ds.Generation && ds.Status.DesiredNumberScheduled > 0 &&
			ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled, nil
	})
	if err != nil {
		return fmt.Errorf("ironlb not rolled out: %s: %w", last, err)
	}
	return nil
}

// AccountKubeconfig is the kubeconfig of ServiceAccount sa in ironlb-system
// (CCMAccount or SpeakerAccount): its token, the lab's API server.
func (l *Lab) AccountKubeconfig(sa string) string {
	return filepath.Join(l.dir, sa+".kubeconfig")
}

func (l *Lab) writeAccountKubeconfig(ctx context.Context, sa string) error {
	exp := int64(tokenLifetime)
	tr, err := l.Client.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for ServiceAccount %s/%s: %w", Namespace, sa, err)
	}
	admin, err := clientcmd.LoadFromFile(l.Kubeconfig)
	if err != nil {
		return err
	}
	ctxt := admin.Contexts[admin.CurrentContext]
	if ctxt == nil || admin.Clusters[ctxt.Cluster] == nil {
		return fmt.Errorf("%s has no current cluster", l.Kubeconfig)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = admin.Clusters[ctxt.Cluster]
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts[sa] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: sa, Namespace: Namespace}
	cfg.CurrentContext = sa
	return clientcmd.WriteToFile(*cfg, l.AccountKubeconfig(sa))
}

// deployArgs are the container arguments of the Deployment or DaemonSet
// name in deploy/default, so the lab runs the components as installed.
func deployArgs(kind, name string) ([]string, error) {
	objs, err := deployObjects()
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() != kind || o.GetName() != name {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			if m, ok := c.(map[string]any); ok && m["name"] == name {
				args, _, _ := unstructured.NestedStringSlice(m, "args")
				return args, nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no %s %s with a container %s", DeployDir, kind, name, name)
}

// ResourceName is how kubectl names an object: kind.group/name.
func ResourceName(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	r := strings.ToLower(gvk.Kind)
	if gvk.Group != "" {
		r += "." + gvk.Group
	}
	return r + "/" + o.GetName()
}
