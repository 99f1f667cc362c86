package deploy

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/clusterkey"
)

// kustomizations are every kustomization users apply.
var kustomizations = []string{lab.DeployDir, "deploy/overlays/kind", "deploy/overlays/bare-metal"}

// TestKustomizeDryRun: each kustomization passes kubectl's strict field
// validation and the API server's admission (schema, CEL rules of the
// CRDs, pod security of the namespace, priority classes) in a server-side
// dry run, object by object.
func TestKustomizeDryRun(t *testing.T) {
	f := framework.New(t)
	for _, dir := range kustomizations {
		objs, err := lab.Render(dir)
		if err != nil {
			t.Fatal(err)
		}
		dryRun(f, objs, "", "-k", dir)
		t.Logf("%s: %d objects", dir, len(objs))
	}
}

// TestInstalledFromDeploy: the CRDs, namespace, ServiceAccounts and RBAC in
// the lab are exactly deploy/default's (kubectl diff finds nothing), and
// ironlb-ccm and every speaker run with those ServiceAccounts' tokens.
func TestInstalledFromDeploy(t *testing.T) {
	f := framework.New(t)
	objs, err := lab.Render(lab.DeployDir)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	crds := 0
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "DaemonSet", "PodDisruptionBudget":
			continue // workloads: the lab runs the binaries itself
		case "CustomResourceDefinition":
			crds++
		}
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	if crds != 2 {
		t.Errorf("%s renders %d CRDs, want IPPool and BGPPeer", lab.DeployDir, crds)
	}
	out, err := tool(f, "kubectl", strings.Join(docs, "---\n"), "diff", "--server-side", "--force-conflicts", "-f", "-")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("the lab's CRDs, namespace and RBAC differ from %s (kubectl diff: %v):\n%s", lab.DeployDir, err, out)
	}

	for _, p := range f.Processes() {
		var account string
		switch {
		case p.Name == "ironlb-ccm":
			account = lab.CCMAccount
		case strings.HasPrefix(p.Name, "ironlb-speaker@"):
			account = lab.SpeakerAccount
		default:
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !slices.Contains(args, "--kubeconfig="+f.AccountKubeconfig(account)) {
			t.Errorf("%s runs with %q, not the %s token", p.Name, args, account)
		}
	}
	for _, account := range []string{lab.CCMAccount, lab.SpeakerAccount} {
		review, err := clientFor(f, account).AuthenticationV1().SelfSubjectReviews().Create(f.Ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := "system:serviceaccount:" + lab.Namespace + ":" + account; review.Status.UserInfo.Username != want {
			t.Errorf("%s's kubeconfig authenticates as %q, want %q", account, review.Status.UserInfo.Username, want)
		}
	}
}

// TestWorksWithDeployRBAC: with nothing but deploy/'s RBAC, a Service gets
// its addresses, is announced and answers from the LAN client, ironlb-ccm has
// created the speakers' cluster key, and neither component logged a refused
// request on the way.
func TestWorksWithDeployRBAC(t *testing.T) {
	f := framework.New(t)
	f.Pool("rbac", f.L2TestPool(1), func(s *v1alpha1.IPPoolSpec) { s.L2 = &v1alpha1.L2Advertisement{} })
	svc, addrs := f.DualStackService("web", "rbac", []int{1, 2}, nil)
	if _, err := f.WaitCondition(f.Ctx, svc, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.Curl(f.ClientNS(), a, "endpoint=", 40)
	}
	waitClusterKey(f)
	for _, p := range f.Processes() {
		if p.Name != "ironlb-ccm" && !strings.HasPrefix(p.Name, "ironlb-speaker@") {
			continue
		}
		log, err := os.ReadFile(p.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("%s was refused a request: %s", p.Name, line)
			}
		}
	}
}

// TestIdentitiesRefused: the speaker's identity may write its condition in a
// Service's status, read a Secret in ironlb-system by name and watch the
// cluster key, and nothing more: it cannot change a Service's spec, address,
// another condition or, through services/status, any of its metadata; it
// cannot delete it, list or watch Secrets or read one anywhere else, or write
// a Lease but speakers' own. The ccm's identity may read the cluster key it
// created and create no other Secret.
func TestIdentitiesRefused(t *testing.T) {
	f := framework.New(t)
	svc := f.Service("web", nil)
	secretName := f.Namespace + "-password"
	for _, s := range []types.NamespacedName{{Namespace: lab.Namespace, Name: secretName}, {Namespace: f.Namespace, Name: "unrelated"}} {
		obj := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name}, StringData: map[string]string{"password": "x"}}
		if _, err := f.Client.CoreV1().Secrets(s.Namespace).Create(f.Ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	defer f.Client.CoreV1().Secrets(lab.Namespace).Delete(f.Ctx, secretName, metav1.DeleteOptions{})
	waitClusterKey(f)

	speaker, ccm := clientFor(f, lab.SpeakerAccount), clientFor(f, lab.CCMAccount)
	type attempt struct {
		who     string
		what    string
		allowed bool
		do      func() error
	}
	// What the admission policy's refusals say (RBAC's say forbidden).
	says := map[string]string{
		"write an address into the Service's status": "may not change a Service's status.loadBalancer",
		"write another component's condition":        "may change only the ironlb.io/Announced condition",
		"create another Secret in ironlb-system":     "may create no Secret but " + clusterkey.SecretName,
		"take over ironlb-ccm's leader Lease":        "may write no Lease but speakers' own",
	}
	// Through services/status, as the speaker writes its condition: the API server keeps the
	// spec but would take metadata as sent, and the admission policy refuses each change.
	metadataPatches := map[string]string{
		"labels":          `{"metadata":{"labels":{"refused":"true"}}}`,
		"annotations":     `{"metadata":{"annotations":{"ironlb.io/allocated-from":"forged"}}}`,
		"finalizers":      `{"metadata":{"finalizers":["example.com/forged"]}}`,
		"ownerReferences": `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"6a1d3f5e-0000-4000-8000-000000000001"}]}}`,
		"generateName":    `{"metadata":{"generateName":"forged-"}}`,
	}
	// A strategic merge patch, so that a condition is merged by its type into the others.
	patchStatus := func(patch string) func() error {
		return func() error {
			_, err := speaker.CoreV1().Services(svc.Namespace).Patch(f.Ctx, svc.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
			return err
		}
	}
	changeSpec := func(c kubernetes.Interface) func() error {
		return func() error {
			s, err := c.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Spec.Ports[0].Port = 8081
			_, err = c.CoreV1().Services(svc.Namespace).Update(f.Ctx, s, metav1.UpdateOptions{})
			return err
		}
	}
	getSecret := func(c kubernetes.Interface, ns, name string) func() error {
		return func() error { _, err := c.CoreV1().Secrets(ns).Get(f.Ctx, name, metav1.GetOptions{}); return err }
	}
	listSecrets := func(c kubernetes.Interface, ns string) func() error {
		return func() error { _, err := c.CoreV1().Secrets(ns).List(f.Ctx, metav1.ListOptions{}); return err }
	}
	attempts := []attempt{
		// What the speaker needs: allowed, so the refusals below are RBAC's.
		{"speaker", "read the Service", true, func() error {
			_, err := speaker.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
			return err
		}},
		{"speaker", "apply its condition to the Service's status", true, func() error {
			ac := corev1ac.Service(svc.Name, svc.Namespace).WithStatus(corev1ac.ServiceStatus().WithConditions(
				metav1ac.Condition().WithType(v1alpha1.ConditionAnnounced).WithStatus(metav1.ConditionFalse).
					WithReason("NotAnnounced").WithMessage("test").WithLastTransitionTime(metav1.Now())))
			_, err := speaker.CoreV1().Services(svc.Namespace).ApplyStatus(f.Ctx, ac, metav1.ApplyOptions{FieldManager: "refusal-test", Force: true})
			return err
		}},
		{"speaker", "read a password Secret in ironlb-system by name", true, getSecret(speaker, lab.Namespace, secretName)},
		{"speaker", "watch the cluster key by name", true, watchSecrets(f.Ctx, speaker, lab.Namespace, clusterkey.SecretName)},
		{"speaker", "patch its condition in the Service's status", true, patchStatus(fmt.Sprintf(
			`{"status":{"conditions":[{"type":%q,"status":"False","reason":"NotAnnounced","message":"patched","lastTransitionTime":%q}]}}`,
			v1alpha1.ConditionAnnounced, time.Now().UTC().Format(time.RFC3339)))},

		{"speaker", "write an address into the Service's status", false, func() error {
			ac := corev1ac.Service(svc.Name, svc.Namespace).WithStatus(corev1ac.ServiceStatus().WithLoadBalancer(
				corev1ac.LoadBalancerStatus().WithIngress(corev1ac.LoadBalancerIngress().WithIP("172.31.255.254"))))
			_, err := speaker.CoreV1().Services(svc.Namespace).ApplyStatus(f.Ctx, ac, metav1.ApplyOptions{FieldManager: "refusal-test-lb", Force: true})
			return err
		}},
		{"speaker", "write another component's condition", false, func() error {
			ac := corev1ac.Service(svc.Name, svc.Namespace).WithStatus(corev1ac.ServiceStatus().WithConditions(
				metav1ac.Condition().WithType(v1alpha1.ConditionIPAllocated).WithStatus(metav1.ConditionTrue).
					WithReason("Allocated").WithMessage("test").WithLastTransitionTime(metav1.Now())))
			_, err := speaker.CoreV1().Services(svc.Namespace).ApplyStatus(f.Ctx, ac, metav1.ApplyOptions{FieldManager: "refusal-test-cond", Force: true})
			return err
		}},

		{"speaker", "change the Service's spec", false, changeSpec(speaker)},
		{"speaker", "patch the Service's spec", false, func() error {
			_, err := speaker.CoreV1().Services(svc.Namespace).Patch(f.Ctx, svc.Name, types.MergePatchType,
				[]byte(`{"spec":{"externalTrafficPolicy":"Local"}}`), metav1.PatchOptions{})
			return err
		}},
		{"speaker", "delete the Service", false, func() error {
			return speaker.CoreV1().Services(svc.Namespace).Delete(f.Ctx, svc.Name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"speaker", "read an unrelated Secret", false, getSecret(speaker, f.Namespace, "unrelated")},
		{"speaker", "list Secrets in ironlb-system", false, listSecrets(speaker, lab.Namespace)},
		{"speaker", "list Secrets everywhere", false, listSecrets(speaker, "")},
		{"speaker", "watch Secrets in ironlb-system", false, watchSecrets(f.Ctx, speaker, lab.Namespace, "")},
		{"speaker", "watch a password Secret by name", false, watchSecrets(f.Ctx, speaker, lab.Namespace, secretName)},
		{"speaker", "create a speaker's Lease", true, func() error {
			l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "ironlb-speaker-" + f.Namespace}}
			_, err := speaker.CoordinationV1().Leases(lab.Namespace).Create(f.Ctx, l, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"speaker", "take over ironlb-ccm's leader Lease", false, func() error {
			l, err := f.Client.CoordinationV1().Leases(lab.Namespace).Get(f.Ctx, lab.CCMAccount, metav1.GetOptions{})
			if err != nil {
				return err
			}
			holder := lab.SpeakerAccount
			l.Spec.HolderIdentity = &holder
			_, err = speaker.CoordinationV1().Leases(lab.Namespace).Update(f.Ctx, l, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"speaker", "change a Node", false, func() error {
			_, err := speaker.CoreV1().Nodes().Patch(f.Ctx, f.NodeName(1), types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"refused":"true"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"ccm", "list Services", true, func() error {
			_, err := ccm.CoreV1().Services("").List(f.Ctx, metav1.ListOptions{Limit: 1})
			return err
		}},
		{"ccm", "read the cluster key it created", true, getSecret(ccm, lab.Namespace, clusterkey.SecretName)},
		{"ccm", "watch the cluster key by name", true, watchSecrets(f.Ctx, ccm, lab.Namespace, clusterkey.SecretName)},
		{"ccm", "read a password Secret in ironlb-system", false, getSecret(ccm, lab.Namespace, secretName)},
		{"ccm", "create another Secret in ironlb-system", false, func() error {
			_, err := ccm.CoreV1().Secrets(lab.Namespace).Create(f.Ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace + "-forged"}},
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"ccm", "change the cluster key", false, func() error {
			_, err := ccm.CoreV1().Secrets(lab.Namespace).Patch(f.Ctx, clusterkey.SecretName, types.MergePatchType,
				[]byte(`{"data":{"accept":"Zm9yZ2Vk"}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"ccm", "read an unrelated Secret", false, getSecret(ccm, f.Namespace, "unrelated")},
		{"ccm", "list Secrets everywhere", false, listSecrets(ccm, "")},
		{"ccm", "delete a Node", false, func() error {
			return ccm.CoreV1().Nodes().Delete(f.Ctx, f.NodeName(1), metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
	}
	for _, field := range slices.Sorted(maps.Keys(metadataPatches)) {
		what := "change the Service's metadata." + field + " through its status"
		attempts = append(attempts, attempt{"speaker", what, false, patchStatus(metadataPatches[field])})
		says[what] = "may not change a Service's metadata." + field
	}
	for _, a := range attempts {
		err := a.do()
		switch {
		case a.allowed && err != nil:
			t.Errorf("%s may not %s: %v", a.who, a.what, err)
		case !a.allowed && err == nil:
			t.Errorf("%s could %s", a.who, a.what)
		case !a.allowed && !apierrors.IsForbidden(err):
			t.Errorf("%s: %s failed, but not as forbidden: %v", a.who, a.what, err)
		case !a.allowed && !strings.Contains(err.Error(), says[a.what]):
			t.Errorf("%s: %s refused with %q, want it to say %q", a.who, a.what, err, says[a.what])
		default:
			t.Logf("%s: %s: allowed=%v (%v)", a.who, a.what, a.allowed, err)
		}
	}
	s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Spec.Ports[0].Port != 80 || s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("the Service's spec changed: %+v", s.Spec)
	}
	if s.Labels["refused"] != "" || s.Annotations[v1alpha1.AnnotationAllocatedFrom] == "forged" || slices.Contains(s.Finalizers, "example.com/forged") ||
		len(s.OwnerReferences) > 0 || s.GenerateName != "" {
		t.Errorf("the Service's metadata changed: labels %v, annotations %v, finalizers %v, ownerReferences %v, generateName %q",
			s.Labels, s.Annotations, s.Finalizers, s.OwnerReferences, s.GenerateName)
	}
}

// watchSecrets starts a watch of Secrets in ns, of the one named name if not
// empty (field selector metadata.name, as informers of one object ask), and
// stops it.
func watchSecrets(ctx context.Context, c kubernetes.Interface, ns, name string) func() error {
	return func() error {
		opts := metav1.ListOptions{}
		if name != "" {
			opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}
		w, err := c.CoreV1().Secrets(ns).Watch(ctx, opts)
		if err != nil {
			return err
		}
		w.Stop()
		return nil
	}
}

func clientFor(f *framework.F, account string) kubernetes.Interface {
	f.T.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", f.AccountKubeconfig(account))
	if err != nil {
		f.T.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		f.T.Fatal(err)
	}
	return c
}

// waitClusterKey waits until the cluster key Secret that ironlb-ccm creates
// (no manual step) is in ironlb-system and holds a usable key.
func waitClusterKey(f *framework.F) {
	f.T.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var s *corev1.Secret
		if s, err = f.Client.CoreV1().Secrets(lab.Namespace).Get(f.Ctx, clusterkey.SecretName, metav1.GetOptions{}); err == nil {
			if _, err = clusterkey.FromSecret(s); err == nil {
				return
			}
		}
	}
	f.T.Fatalf("no usable cluster key Secret %s/%s from ironlb-ccm: %v", lab.Namespace, clusterkey.SecretName, err)
}
