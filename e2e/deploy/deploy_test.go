package deploy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
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
// its addresses, is announced and answers from the LAN client, and neither
// component logged a refused request on the way.
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
// Service's status and read a Secret in ironlb-system by name, and nothing
// more: it cannot change a Service's spec or address or another condition,
// delete it, list Secrets or read one anywhere else. The ccm's identity
// cannot touch Secrets at all.
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
		{"speaker", "change a Node", false, func() error {
			_, err := speaker.CoreV1().Nodes().Patch(f.Ctx, f.NodeName(1), types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"refused":"true"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"ccm", "list Services", true, func() error {
			_, err := ccm.CoreV1().Services("").List(f.Ctx, metav1.ListOptions{Limit: 1})
			return err
		}},
		{"ccm", "read a password Secret in ironlb-system", false, getSecret(ccm, lab.Namespace, secretName)},
		{"ccm", "read an unrelated Secret", false, getSecret(ccm, f.Namespace, "unrelated")},
		{"ccm", "list Secrets everywhere", false, listSecrets(ccm, "")},
		{"ccm", "delete a Node", false, func() error {
			return ccm.CoreV1().Nodes().Delete(f.Ctx, f.NodeName(1), metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
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
