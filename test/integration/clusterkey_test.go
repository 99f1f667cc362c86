package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/internal/clusterkey"
)

const (
	deployDir   = "deploy/default"
	ironlbNS    = "ironlb-system"
	ccmSA       = "ironlb-ccm"
	speakerSA   = "ironlb-speaker"
	keyMinBytes = clusterkey.MinLen
)

// TestClusterKey_CCMKeepsTheSecretAndNeverOverwritesIt: with nothing but deploy/default's RBAC
// and admission policies, two ironlb-ccm replicas leave a Secret that is already there alone
// (a malformed one only gets a Warning event naming it), create a random key when the Secret is
// deleted while they run, and create it at start when it is missing.
func TestClusterKey_CCMKeepsTheSecretAndNeverOverwritesIt(t *testing.T) {
	e := newEnv(t)
	ccmKubeconfig, _ := e.installDeployIdentities()
	secrets := e.client.CoreV1().Secrets(ironlbNS)
	ccmArgs := []string{"--kubeconfig=" + ccmKubeconfig, "--leader-elect-resource-namespace=" + ironlbNS}

	// An operator's Secret, unusable: its key is short.
	mine := &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: clusterkey.SecretName, Namespace: ironlbNS},
		Data:       map[string][]byte{clusterkey.DataKey: []byte("too-short")},
	}
	if _, err := secrets.Create(e.ctx, mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first, second := e.startCCM("ccm-a", ccmArgs...), e.startCCM("ccm-b", ccmArgs...)

	msg := e.waitSecretEvent(clusterkey.ReasonInvalid)
	for _, want := range []string{ironlbNS + "/" + clusterkey.SecretName, fmt.Sprintf("at least %d", keyMinBytes), "leaves it alone"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the Warning event on the malformed Secret says %q; want it to say %q", msg, want)
		}
	}
	time.Sleep(2 * time.Second) // time enough for a keeper that overwrites to have done so
	got := e.secret()
	if !bytes.Equal(got.Data[clusterkey.DataKey], []byte("too-short")) {
		t.Errorf("ironlb-ccm changed the operator's Secret: key is now %d bytes", len(got.Data[clusterkey.DataKey]))
	}
	if !hasLine(first.Log()+second.Log(), "The cluster key Secret is unusable", clusterkey.SecretName) {
		t.Errorf("no log line names the unusable Secret; logs:\n%s\n%s", first.Tail(20), second.Tail(20))
	}

	// Deleted while ironlb-ccm runs: a new random key, at once.
	old := got
	if err := secrets.Delete(e.ctx, clusterkey.SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := e.waitKey(old)
	e.waitSecretEvent(clusterkey.ReasonCreated)

	// An operator rotates in a key of their own: ironlb-ccm keeps it.
	rotated := bytes.Repeat([]byte{0x5a}, 48)
	recreated.Data = map[string][]byte{clusterkey.DataKey: rotated, clusterkey.DataAccept: recreated.Data[clusterkey.DataKey]}
	if _, err := secrets.Update(e.ctx, recreated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Both replicas stop; a third starts with the Secret in place, then without it.
	leader := e.leaseHolder()
	first.Signal(syscall.SIGKILL)
	second.Signal(syscall.SIGKILL)
	third := e.startCCM("ccm-c", ccmArgs...)
	e.waitNewLeader(leader)
	time.Sleep(2 * time.Second) // the leader's keeper has listed the Secret
	if got := e.secret(); !bytes.Equal(got.Data[clusterkey.DataKey], rotated) || got.UID != recreated.UID {
		t.Errorf("a starting ironlb-ccm replaced the operator's key")
	}
	third.Signal(syscall.SIGKILL)
	if err := secrets.Delete(e.ctx, clusterkey.SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fourth := e.startCCM("ccm-d", ccmArgs...)
	e.waitKey(recreated)

	for _, p := range []*ccm{first, second, third, fourth} {
		if hasLine(strings.ToLower(p.Log()), "forbidden") {
			t.Errorf("%s was refused a request with deploy/default's RBAC:\n%s", p.Name(), p.Tail(20))
		}
	}
}

// TestClusterKey_RBACGrantsTheOneSecret: deploy/default lets the speaker's ServiceAccount watch
// the cluster key Secret by name (as its informer asks: field selector metadata.name) and
// lets the ccm's create it, and neither can list or watch any other Secret or read one outside
// ironlb-system; the ccm's identity cannot create any other Secret.
func TestClusterKey_RBACGrantsTheOneSecret(t *testing.T) {
	e := newEnv(t)
	_, accounts := e.installDeployIdentities()
	speaker := kubernetes.NewForConfigOrDie(accounts[speakerSA])
	ccmClient := kubernetes.NewForConfigOrDie(accounts[ccmSA])
	e.namespace("apps", nil)
	for _, s := range []*v1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ironlbNS}, StringData: map[string]string{"x": "y"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "apps"}, StringData: map[string]string{"x": "y"}},
	} {
		if _, err := e.client.CoreV1().Secrets(s.Namespace).Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The ccm's identity creates the Secret (as the Keeper does), then the speaker's informer
	// lists and watches it.
	data, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	key := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clusterkey.SecretName, Namespace: ironlbNS}, Data: data}
	if _, err := ccmClient.CoreV1().Secrets(ironlbNS).Create(e.ctx, key, metav1.CreateOptions{}); err != nil {
		t.Fatalf("ironlb-ccm may not create the cluster key Secret: %v", err)
	}
	for name, c := range map[string]kubernetes.Interface{speakerSA: speaker, ccmSA: ccmClient} {
		inf := clusterkey.NewInformer(c, ironlbNS)
		stop := make(chan struct{})
		go inf.Run(stop)
		syncCtx, cancel := context.WithTimeout(e.ctx, waitTimeout)
		synced := cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced)
		cancel()
		if !synced {
			close(stop)
			t.Fatalf("%s's informer of the cluster key never synced (list and watch by name refused?)", name)
		}
		seen := false
		e.eventually(name+" to see the cluster key Secret through its watch", func() (bool, string) {
			_, seen, _ = inf.GetStore().GetByKey(ironlbNS + "/" + clusterkey.SecretName)
			return seen, "not in the informer's store"
		})
		// A change arrives through the watch.
		e.updateSecretData(clusterkey.DataAccept, bytes.Repeat([]byte{byte(len(name))}, keyMinBytes))
		e.eventually(name+" to see the Secret change through its watch", func() (bool, string) {
			obj, ok, _ := inf.GetStore().GetByKey(ironlbNS + "/" + clusterkey.SecretName)
			if !ok {
				return false, "gone"
			}
			k, err := clusterkey.FromSecret(obj.(*v1.Secret))
			return err == nil && len(k.Accept) == 2 && k.Accept[1][0] == byte(len(name)), fmt.Sprintf("keys %v, %v", len(k.Accept), err)
		})
		close(stop)
	}

	byName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", clusterkey.SecretName).String()}
	otherByName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "other").String()}
	attempts := []struct {
		who, what string
		allowed   bool
		do        func() error
	}{
		{speakerSA, "get the cluster key", true, func() error {
			_, err := speaker.CoreV1().Secrets(ironlbNS).Get(e.ctx, clusterkey.SecretName, metav1.GetOptions{})
			return err
		}},
		{speakerSA, "list Secrets in ironlb-system", false, func() error {
			_, err := speaker.CoreV1().Secrets(ironlbNS).List(e.ctx, metav1.ListOptions{})
			return err
		}},
		{speakerSA, "watch Secrets in ironlb-system", false, func() error { return watchOnce(e.ctx, speaker, ironlbNS, metav1.ListOptions{}) }},
		{speakerSA, "list another Secret by name", false, func() error {
			_, err := speaker.CoreV1().Secrets(ironlbNS).List(e.ctx, otherByName)
			return err
		}},
		{speakerSA, "watch another Secret by name", false, func() error { return watchOnce(e.ctx, speaker, ironlbNS, otherByName) }},
		{speakerSA, "watch the cluster key in another namespace", false, func() error { return watchOnce(e.ctx, speaker, "apps", byName) }},
		{speakerSA, "get a Secret in another namespace", false, func() error {
			_, err := speaker.CoreV1().Secrets("apps").Get(e.ctx, "other", metav1.GetOptions{})
			return err
		}},
		{speakerSA, "change the cluster key", false, func() error {
			_, err := speaker.CoreV1().Secrets(ironlbNS).Patch(e.ctx, clusterkey.SecretName, "application/merge-patch+json",
				[]byte(`{"data":{"key":null}}`), metav1.PatchOptions{})
			return err
		}},
		{speakerSA, "create a Secret", false, func() error {
			_, err := speaker.CoreV1().Secrets(ironlbNS).Create(e.ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{ccmSA, "get another Secret in ironlb-system", false, func() error {
			_, err := ccmClient.CoreV1().Secrets(ironlbNS).Get(e.ctx, "other", metav1.GetOptions{})
			return err
		}},
		{ccmSA, "list Secrets in ironlb-system", false, func() error {
			_, err := ccmClient.CoreV1().Secrets(ironlbNS).List(e.ctx, metav1.ListOptions{})
			return err
		}},
		{ccmSA, "watch another Secret by name", false, func() error { return watchOnce(e.ctx, ccmClient, ironlbNS, otherByName) }},
		{ccmSA, "update the cluster key", false, func() error {
			s, err := e.client.CoreV1().Secrets(ironlbNS).Get(e.ctx, clusterkey.SecretName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = ccmClient.CoreV1().Secrets(ironlbNS).Update(e.ctx, s, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{ccmSA, "delete the cluster key", false, func() error {
			return ccmClient.CoreV1().Secrets(ironlbNS).Delete(e.ctx, clusterkey.SecretName, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{ccmSA, "create a Secret in another namespace", false, func() error {
			_, err := ccmClient.CoreV1().Secrets("apps").Create(e.ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clusterkey.SecretName}},
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
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
		default:
			t.Logf("%s: %s: allowed=%v (%v)", a.who, a.what, a.allowed, err)
		}
	}

	// RBAC cannot narrow a create to a name; the admission policy ironlb-ccm-secrets does.
	// Policies take effect a moment after they are created, so ask until refused.
	var refused error
	e.eventually("ironlb-ccm's identity to be refused another Secret", func() (bool, string) {
		_, refused = ccmClient.CoreV1().Secrets(ironlbNS).Create(e.ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-the-key"}},
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return refused != nil, "created"
	})
	if !apierrors.IsForbidden(refused) || !strings.Contains(refused.Error(), "may create no Secret but "+clusterkey.SecretName) {
		t.Errorf("creating another Secret as ironlb-ccm: %v; want the policy ironlb-ccm-secrets to refuse it", refused)
	}
}

// watchOnce starts a watch and stops it; it returns the API server's refusal.
func watchOnce(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) error {
	w, err := c.CoreV1().Secrets(ns).Watch(ctx, opts)
	if err != nil {
		return err
	}
	w.Stop()
	return nil
}

// installDeployIdentities creates the namespace, ServiceAccounts, RBAC and admission policies of
// deploy/default (not its workloads: nothing runs them here), and returns a kubeconfig file for
// ironlb-ccm's ServiceAccount and a client config for each ServiceAccount, each with a token of
// that ServiceAccount.
func (e *env) installDeployIdentities() (string, map[string]*rest.Config) {
	e.t.Helper()
	gvrs := map[string]schema.GroupVersionResource{
		"Namespace":                        {Version: "v1", Resource: "namespaces"},
		"ServiceAccount":                   {Version: "v1", Resource: "serviceaccounts"},
		"ClusterRole":                      {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		"Role":                             {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		"RoleBinding":                      {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
		"ValidatingAdmissionPolicy":        {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
		"ValidatingAdmissionPolicyBinding": {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"},
	}
	workloads := map[string]bool{"Deployment": true, "DaemonSet": true, "PodDisruptionBudget": true}
	objs := deployObjects(e.t)
	// Namespaces first: everything else lives in one.
	for _, first := range []bool{true, false} {
		for _, o := range objs {
			kind := o.GetKind()
			if workloads[kind] || (kind == "Namespace") != first {
				continue
			}
			gvr, ok := gvrs[kind]
			if !ok {
				e.t.Fatalf("%s has a %s (%s), which this test does not know how to install", deployDir, kind, o.GetName())
			}
			var err error
			if ns := o.GetNamespace(); ns != "" {
				_, err = e.dyn.Resource(gvr).Namespace(ns).Create(e.ctx, o, metav1.CreateOptions{})
			} else {
				_, err = e.dyn.Resource(gvr).Create(e.ctx, o, metav1.CreateOptions{})
			}
			if err != nil {
				e.t.Fatalf("create %s %s from %s: %v", kind, o.GetName(), deployDir, err)
			}
		}
	}

	admin, err := clientcmd.LoadFromFile(e.api.KubeconfigPath())
	if err != nil {
		e.t.Fatal(err)
	}
	configs := map[string]*rest.Config{}
	var ccmKubeconfig string
	for _, sa := range []string{ccmSA, speakerSA} {
		exp := int64(24 * 3600)
		tr, err := e.client.CoreV1().ServiceAccounts(ironlbNS).CreateToken(e.ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			e.t.Fatalf("token of ServiceAccount %s: %v", sa, err)
		}
		cfg := rest.AnonymousClientConfig(e.api.Config())
		cfg.BearerToken = tr.Status.Token
		configs[sa] = cfg

		kc := admin.DeepCopy()
		for _, auth := range kc.AuthInfos {
			*auth = *auth.DeepCopy()
			auth.Token, auth.TokenFile = tr.Status.Token, ""
		}
		path := filepath.Join(e.t.TempDir(), sa+".kubeconfig")
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			e.t.Fatal(err)
		}
		if sa == ccmSA {
			ccmKubeconfig = path
		}
	}
	// Make sure the tokens are the ServiceAccounts', so that every refusal is theirs.
	for sa, cfg := range configs {
		review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(e.ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if want := "system:serviceaccount:" + ironlbNS + ":" + sa; review.Status.UserInfo.Username != want {
			e.t.Fatalf("%s's token authenticates as %q, want %q", sa, review.Status.UserInfo.Username, want)
		}
	}
	return ccmKubeconfig, configs
}

// deployObjects reads the manifests that deploy/default's kustomization lists (its CRDs aside:
// newEnv installs them). The kustomization only adds labels and image tags, which do not matter
// here.
func deployObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(repoRoot, deployDir)
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", deployDir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range k.Resources {
		if !strings.HasSuffix(r, ".yaml") {
			continue // ../crds
		}
		f, err := os.Open(filepath.Join(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		d := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			var m map[string]any
			err := d.Decode(&m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s/%s: %v", deployDir, r, err)
			}
			if len(m) > 0 {
				objs = append(objs, &unstructured.Unstructured{Object: m})
			}
		}
		f.Close()
	}
	return objs
}

func (e *env) secret() *v1.Secret {
	e.t.Helper()
	s, err := e.client.CoreV1().Secrets(ironlbNS).Get(e.ctx, clusterkey.SecretName, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get the cluster key Secret: %v", err)
	}
	return s
}

// waitKey waits for a cluster key Secret other than old (nil: any), checks that it holds
// a usable random key, and returns it.
func (e *env) waitKey(old *v1.Secret) *v1.Secret {
	e.t.Helper()
	var s *v1.Secret
	e.eventually("a new cluster key Secret", func() (bool, string) {
		var err error
		s, err = e.client.CoreV1().Secrets(ironlbNS).Get(e.ctx, clusterkey.SecretName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return old == nil || s.UID != old.UID, "the old one is still there"
	})
	keys, err := clusterkey.FromSecret(s)
	if err != nil {
		e.t.Fatalf("ironlb-ccm created an unusable Secret: %v", err)
	}
	if len(keys.Sign) < keyMinBytes || len(keys.Accept) != 1 || bytes.Count(keys.Sign, keys.Sign[:1]) == len(keys.Sign) {
		e.t.Errorf("ironlb-ccm's key: %d bytes, %d accepted keys; want at least %d random bytes and no second key", len(keys.Sign), len(keys.Accept), keyMinBytes)
	}
	if old != nil && bytes.Equal(keys.Sign, old.Data[clusterkey.DataKey]) {
		e.t.Errorf("the new Secret holds the old key")
	}
	if s.Type != v1.SecretTypeOpaque {
		e.t.Errorf("ironlb-ccm's Secret has type %q, want Opaque", s.Type)
	}
	return s
}

func (e *env) updateSecretData(k string, v []byte) {
	e.t.Helper()
	s := e.secret()
	s.Data[k] = v
	if _, err := e.client.CoreV1().Secrets(ironlbNS).Update(e.ctx, s, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// waitSecretEvent waits for an event with reason on the cluster key Secret and returns its
// message.
func (e *env) waitSecretEvent(reason string) string {
	e.t.Helper()
	msg := ""
	sel := fields.Set{"involvedObject.name": clusterkey.SecretName, "involvedObject.kind": "Secret"}.AsSelector().String()
	e.eventually("event "+reason+" on the cluster key Secret", func() (bool, string) {
		list, err := e.client.CoreV1().Events(ironlbNS).List(e.ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return false, err.Error()
		}
		for _, ev := range list.Items {
			if ev.Reason == reason {
				msg = ev.Message
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %v", eventReasons(list.Items))
	})
	return msg
}

// leaseHolder is the identity that holds ironlb-ccm's Lease, "" if none does.
func (e *env) leaseHolder() string {
	e.t.Helper()
	l, err := e.client.CoordinationV1().Leases(ironlbNS).Get(e.ctx, "ironlb-ccm", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// waitNewLeader waits until a replica other than old holds ironlb-ccm's Lease.
func (e *env) waitNewLeader(old string) {
	e.t.Helper()
	e.eventually("a new ironlb-ccm leader", func() (bool, string) {
		h := e.leaseHolder()
		return h != "" && h != old, "holder " + h
	})
}

func hasLine(log string, all ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, s := range all {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return true
		}
	}
	return false
}
