package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/testenv"
)

const (
	// helmChartDir is the chart, relative to the repository root.
	helmChartDir = "deploy/helm/ironlb"
	// helmFullValues sets every feature of the chart.
	helmFullValues = helmChartDir + "/ci/full-values.yaml"
	// helmRelease is the release name the tests render.
	helmRelease = "ironlb"
)

// TestHelmLint: helm lint --strict passes with the default values and with
// ci/full-values.yaml.
func TestHelmLint(t *testing.T) {
	f := framework.New(t)
	for _, args := range [][]string{
		{"lint", "--strict", helmChartDir},
		{"lint", "--strict", "--namespace", lab.Namespace, "--values", helmFullValues, helmChartDir},
	} {
		out, err := tool(f, "helm", "", args...)
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestHelmDryRun: the chart's objects, CRDs included, pass a strict
// server-side dry run against the lab's API server, with the default values
// and with ci/full-values.yaml, and kubectl names every one of them.
func TestHelmDryRun(t *testing.T) {
	always := []string{
		"customresourcedefinition.apiextensions.k8s.io/ippools.ironlb.io", "customresourcedefinition.apiextensions.k8s.io/bgppeers.ironlb.io",
		"serviceaccount/ironlb-ccm", "serviceaccount/ironlb-speaker",
		"clusterrole.rbac.authorization.k8s.io/ironlb-ccm", "clusterrole.rbac.authorization.k8s.io/ironlb-speaker",
		"role.rbac.authorization.k8s.io/ironlb-speaker-bgp-passwords", "role.rbac.authorization.k8s.io/ironlb-ccm-leader-election",
		"role.rbac.authorization.k8s.io/ironlb-speaker-heartbeat-key", "role.rbac.authorization.k8s.io/ironlb-ccm-heartbeat-key",
		"validatingadmissionpolicy.admissionregistration.k8s.io/ironlb-speaker-service-status",
		"validatingadmissionpolicy.admissionregistration.k8s.io/ironlb-ccm-secrets",
		"role.rbac.authorization.k8s.io/ironlb-speaker-leases", "validatingadmissionpolicy.admissionregistration.k8s.io/ironlb-speaker-leases",
		"deployment.apps/ironlb-ccm", "poddisruptionbudget.policy/ironlb-ccm", "daemonset.apps/ironlb-speaker",
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"default", nil, always},
		{"full-values", []string{"--values", helmFullValues}, append(slices.Clone(always),
			"namespace/ironlb-system", "ippool.ironlb.io/lan", "ippool.ironlb.io/routed", "bgppeer.ironlb.io/tor", "bgppeer.ironlb.io/tor-v6")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := framework.New(t)
			rendered := helmTemplate(f, tc.args...)
			out := dryRun(f, helmParse(t, rendered), rendered, "-f", "-")
			for _, w := range tc.want {
				if !strings.Contains(out, w+" serverside-applied") {
					t.Errorf("kubectl apply output does not name %s:\n%s", w, out)
				}
			}
		})
	}
}

// TestHelmMatchesKustomize: with the default values the chart renders what
// deploy/default does: the same objects (kind, namespace, name), the same
// RBAC rules and bindings, the same workload, PodDisruptionBudget, admission
// policy and CRD specs, and every label of deploy/default (Helm adds its own).
func TestHelmMatchesKustomize(t *testing.T) {
	f := framework.New(t)
	base, err := lab.Render(lab.DeployDir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*unstructured.Unstructured{}
	for _, o := range base {
		want[helmKey(o)] = o
	}

	// The defaults leave the Namespace to `helm install --create-namespace`: everything but it.
	defaults := helmParse(t, helmTemplate(f))
	var gotKeys, wantKeys []string
	for _, o := range defaults {
		gotKeys = append(gotKeys, helmKey(o))
	}
	for k, o := range want {
		if o.GetKind() != "Namespace" {
			wantKeys = append(wantKeys, k)
		}
	}
	helmCompareKeys(t, "default values", wantKeys, gotKeys)

	// namespace.create=true adds the Namespace, with deploy/default's pod-security labels.
	got := map[string]*unstructured.Unstructured{}
	gotKeys = nil
	for _, o := range helmParse(t, helmTemplate(f, "--set", "namespace.create=true")) {
		got[helmKey(o)] = o
		gotKeys = append(gotKeys, helmKey(o))
	}
	wantKeys = slices.Collect(maps.Keys(want))
	helmCompareKeys(t, "namespace.create=true", wantKeys, gotKeys)

	compared := 0
	for key, w := range want {
		g := got[key]
		if g == nil {
			continue // reported above
		}
		// Everything but metadata: rules of Roles and ClusterRoles, roleRef and subjects
		// of bindings, the specs of the Deployment, DaemonSet, PodDisruptionBudget,
		// admission policies and CRDs (crds/ holds copies of deploy/crds; make
		// verify-generate checks the files). For the Deployment and DaemonSet that is
		// replicas, selector, update strategy and the pod template's spec: containers with
		// image, args, env, ports, probes, securityContext, resources; hostNetwork,
		// tolerations, serviceAccountName, priorityClassName, terminationGracePeriodSeconds
		// and the rest. Their template's labels must hold deploy/default's (Helm adds its own).
		if w.GetKind() == "Deployment" || w.GetKind() == "DaemonSet" {
			helmCompareLabels(t, key+" pod template", w, g, "spec", "template", "metadata", "labels")
		}
		var sides [2]any
		for i, o := range []*unstructured.Unstructured{w, g} {
			c := o.DeepCopy()
			delete(c.Object, "metadata")
			unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata")
			sides[i] = helmNormalize(t, c.Object)
		}
		for _, d := range helmDiff(key, sides[0], sides[1]) {
			t.Errorf("helm differs from %s: %s", lab.DeployDir, d)
		}
		if w.GetKind() != "CustomResourceDefinition" {
			// kustomize's labels (app.kubernetes.io/part-of, name, component) and the
			// namespace's pod-security labels; Helm's own come on top. The CRDs in crds/ are
			// verbatim copies and carry no labels.
			helmCompareLabels(t, key, w, g, "metadata", "labels")
			helmCheckStandardLabels(t, g)
		}
		compared++
	}
	t.Logf("%d objects of %s and of the chart compared", compared, lab.DeployDir)
}

// TestHelmPasswordSecretsRole: with ci/full-values.yaml the speaker's Secret
// Role grants `get` on exactly the password Secrets the values name (the
// peers' passwordSecretRefs in the release namespace and
// speaker.passwordSecrets); a passwordSecretRef into another namespace
// fails the rendering.
func TestHelmPasswordSecretsRole(t *testing.T) {
	f := framework.New(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, helmFullValues))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Speaker struct {
			PasswordSecrets []string `json:"passwordSecrets"`
		} `json:"speaker"`
		Peers []struct {
			Spec struct {
				PasswordSecretRef *struct{ Name, Namespace string } `json:"passwordSecretRef"`
			} `json:"spec"`
		} `json:"peers"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatalf("%s: %v", helmFullValues, err)
	}
	var want []string
	for _, p := range values.Peers {
		if ref := p.Spec.PasswordSecretRef; ref != nil && (ref.Namespace == "" || ref.Namespace == lab.Namespace) {
			want = append(want, ref.Name)
		}
	}
	want = append(want, values.Speaker.PasswordSecrets...)
	sort.Strings(want)
	want = slices.Compact(want)
	if len(want) < 2 {
		t.Fatalf("%s names %v as password Secrets; the test needs a peer's and speaker.passwordSecrets", helmFullValues, want)
	}

	role := helmFind(t, helmParse(t, helmTemplate(f, "--values", helmFullValues)), "Role", lab.Namespace, "ironlb-speaker-bgp-passwords")
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	wantRules := []any{map[string]any{
		"apiGroups": []any{""}, "resources": []any{"secrets"}, "verbs": []any{"get"},
		"resourceNames": helmNormalize(t, want),
	}}
	for _, d := range helmDiff("Role ironlb-speaker-bgp-passwords .rules", wantRules, helmNormalize(t, rules)) {
		t.Error(d)
	}

	// A Secret in another namespace cannot be granted: the chart says so instead of
	// rendering a peer the speaker cannot read the password of.
	out, err := helmTemplateErr(f, "--values", helmFullValues, "--set", "peers[0].spec.passwordSecretRef.namespace=elsewhere")
	if err == nil || !strings.Contains(out, "peers: tor: spec.passwordSecretRef names a Secret in namespace elsewhere") {
		t.Errorf("helm template with a passwordSecretRef into namespace elsewhere: want a failure naming peer tor and the namespace, got %v:\n%s", err, helmHead(out))
	}
}

// TestHelmClusterKeyBroughtByOperator: with clusterKey.createMissing=false
// ironlb-ccm runs without its controller cluster-key-controller and may neither create
// nor read Secrets (no Role, no admission policy for it), while the speaker
// still watches the key; the objects pass a server-side dry run.
func TestHelmClusterKeyBroughtByOperator(t *testing.T) {
	f := framework.New(t)
	rendered := helmTemplate(f, "--set", "clusterKey.createMissing=false")
	objs := helmParse(t, rendered)
	for _, o := range objs {
		switch helmKey(o) {
		case "Role " + lab.Namespace + "/ironlb-ccm-heartbeat-key", "RoleBinding " + lab.Namespace + "/ironlb-ccm-heartbeat-key",
			"ValidatingAdmissionPolicy ironlb-ccm-secrets", "ValidatingAdmissionPolicyBinding ironlb-ccm-secrets":
			t.Errorf("clusterKey.createMissing=false still renders %s", helmKey(o))
		}
	}
	helmFind(t, objs, "Role", lab.Namespace, "ironlb-speaker-heartbeat-key")
	ccm := helmFind(t, objs, "Deployment", lab.Namespace, "ironlb-ccm")
	containers, _, _ := unstructured.NestedSlice(ccm.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !slices.Contains(args, "--controllers=*,-cluster-key-controller") {
		t.Errorf("clusterKey.createMissing=false: ironlb-ccm runs with %q, want --controllers=*,-cluster-key-controller", args)
	}
	dryRun(f, objs, rendered, "-f", "-")
}

// TestHelmSchemaRejects: values.schema.json (and the chart's own checks)
// reject bad values, and helm's message names the value.
func TestHelmSchemaRejects(t *testing.T) {
	f := framework.New(t)
	for _, tc := range []struct {
		set     string
		mention []string
	}{
		{"speaker.heartbeatTimeout=soon", []string{"/speaker/heartbeatTimeout", "soon"}},
		{"speaker.heartbeatInterval=1h", []string{"/speaker/heartbeatInterval"}},
		{"ccm.replicas=-1", []string{"/ccm/replicas"}},
		{"images.ccm.pullPolicy=Sometimes", []string{"/images/ccm/pullPolicy", "IfNotPresent"}},
		{"unknownKey=1", []string{"unknownKey"}},
		{"ccm.unknownKey=1", []string{"/ccm", "unknownKey"}},
		{"speaker.peerPort=70000", []string{"/speaker/peerPort"}},
		{"speaker.metricsPort=0", []string{"/speaker/metricsPort"}},
		{"pools[0].name=p", []string{"/pools/0", "spec"}},
		{"handleClassless=maybe", []string{"/handleClassless"}},
		{"clusterKey.createMissing=later", []string{"/clusterKey/createMissing"}},
		{"clusterKey.name=mine", []string{"/clusterKey", "name"}},
		// The chart's checks beyond the schema.
		{"speaker.heartbeatTimeout=100ms", []string{"speaker.heartbeatTimeout (100ms) must be longer than speaker.heartbeatInterval (100ms)"}},
		{"ccm.replicas=1", []string{"ccm.pdb.minAvailable (1) must be less than ccm.replicas (1)"}},
	} {
		out, err := helmTemplateErr(f, "--set", tc.set)
		if err == nil {
			t.Errorf("helm template --set %s: succeeded, want a failure", tc.set)
			continue
		}
		for _, m := range tc.mention {
			if !strings.Contains(out, m) {
				t.Errorf("helm template --set %s: the failure does not mention %q:\n%s", tc.set, m, helmHead(out))
			}
		}
	}
	// What is allowed stays allowed.
	for _, set := range []string{"speaker.heartbeatTimeout=2s", "ccm.replicas=1,ccm.pdb.enabled=false", "ccm.pdb.minAvailable=50%", "images.ccm.pullPolicy=Always"} {
		if out, err := helmTemplateErr(f, "--set", set); err != nil {
			t.Errorf("helm template --set %s: %v\n%s", set, err, helmHead(out))
		}
	}
}

// helmTemplate renders the chart as release ironlb in ironlb-system, CRDs
// included, with more helm arguments (--values, --set); it fails the test
// when helm fails.
func helmTemplate(f *framework.F, args ...string) string {
	f.T.Helper()
	out, err := helmTemplateErr(f, args...)
	if err != nil {
		f.T.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// helmTemplateErr is helmTemplate that returns helm's failure: stdout alone
// when helm succeeds (so that it parses as YAML), stdout and stderr when it
// fails.
func helmTemplateErr(f *framework.F, args ...string) (string, error) {
	f.T.Helper()
	args = append([]string{"template", helmRelease, helmChartDir, "--namespace", lab.Namespace, "--include-crds"}, args...)
	stdout, stderr, err := run(f, "helm", "", args...)
	if err != nil {
		return stdout + stderr, err
	}
	return stdout, nil
}

// helmParse splits rendered YAML into objects.
func helmParse(t *testing.T, rendered string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := yaml.NewYAMLOrJSONDecoder(strings.NewReader(rendered), 4096)
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parse helm output: %v\n%s", err, helmHead(rendered))
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatalf("helm rendered no object:\n%s", rendered)
	}
	return objs
}

// helmKey names an object as "Kind namespace/name" ("Kind name" when
// cluster-scoped).
func helmKey(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", o.GetKind(), ns, o.GetName())
	}
	return fmt.Sprintf("%s %s", o.GetKind(), o.GetName())
}

func helmFind(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("helm rendered no %s %s/%s", kind, ns, name)
	return nil
}

// helmCompareKeys reports the objects only one side has.
func helmCompareKeys(t *testing.T, what string, want, got []string) {
	t.Helper()
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
		if seen[k] == 2 {
			t.Errorf("helm (%s) renders %s twice", what, k)
		}
	}
	for _, k := range want {
		if seen[k] == 0 {
			t.Errorf("helm (%s) lacks %s of %s", what, k, lab.DeployDir)
		}
		delete(seen, k)
	}
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		t.Errorf("helm (%s) renders %s, which %s does not have", what, k, lab.DeployDir)
	}
}

// helmCompareLabels reports every label of want at path that got lacks or
// has with another value.
func helmCompareLabels(t *testing.T, what string, want, got *unstructured.Unstructured, path ...string) {
	t.Helper()
	wl, _, _ := unstructured.NestedStringMap(want.Object, path...)
	gl, _, _ := unstructured.NestedStringMap(got.Object, path...)
	for _, k := range helmSortedKeys(wl) {
		if g, ok := gl[k]; !ok || g != wl[k] {
			t.Errorf("helm differs from %s: %s .%s[%s]: kustomize %q, helm %q (present: %v)", lab.DeployDir, what, strings.Join(path, "."), k, wl[k], g, ok)
		}
	}
}

// helmCheckStandardLabels reports a chart object without the standard labels.
func helmCheckStandardLabels(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	l := o.GetLabels()
	for k, v := range map[string]string{
		"app.kubernetes.io/instance":   helmRelease,
		"app.kubernetes.io/managed-by": "Helm",
		"app.kubernetes.io/part-of":    "ironlb",
	} {
		if l[k] != v {
			t.Errorf("%s: label %s is %q, want %q", helmKey(o), k, l[k], v)
		}
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/version", "helm.sh/chart"} {
		if l[k] == "" {
			t.Errorf("%s: no label %s", helmKey(o), k)
		}
	}
}

// helmNormalize turns v into what encoding/json makes of it, so that both
// sides have the same number types.
func helmNormalize(t *testing.T, v any) any {
	t.Helper()
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// helmDiff lists the differences between want (kustomize) and got (helm),
// each with the path of the field.
func helmDiff(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		keys := helmSortedKeys(w)
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		var diffs []string
		for _, k := range keys {
			diffs = append(diffs, helmDiff(path+"."+k, w[k], g[k])...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, helmDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return diffs
	}
	if reflect.DeepEqual(want, got) {
		return nil
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	return []string{fmt.Sprintf("%s: kustomize %s, helm %s", path, wj, gj)}
}

func helmSortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// helmHead is the start of long output, for messages.
func helmHead(s string) string {
	const max = 3000
	if len(s) > max {
		return s[:max] + "\n[...]"
	}
	return s
}
