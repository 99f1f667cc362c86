package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// waitGone waits until the Service no longer exists.
func (e *env) waitGone(key string) {
	e.t.Helper()
	ns, name := splitKey(key)
	e.eventually(key+" to be gone", func() (bool, string) {
		_, err := e.client.CoreV1().Services(ns).Get(e.ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
}

// ownedBy returns the fields manager owns on the Service, as the API server lists them.
func ownedBy(svc *v1.Service, manager string) string {
	var out []string
	for _, mf := range svc.ManagedFields {
		if mf.Manager == manager && mf.FieldsV1 != nil {
			out = append(out, string(mf.FieldsV1.Raw))
		}
	}
	return strings.Join(out, " ")
}

func TestRecreatedServiceGetsItsRecordedAddressBack(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.120.0/28"))
	e.startCCM("ccm")

	e.waitAllocated(e.service("first").Name, 1)
	web := e.waitAllocated(e.service("web").Name, 1)
	addr := ingressIPs(web)[0]

	// ironlb records the address in an annotation it owns; the user's manager owns none of it.
	e.eventually("the record", func() (bool, string) {
		web = e.get("web")
		return web.Annotations[v1alpha1.AnnotationAllocatedAddresses] == addr, fmt.Sprintf("annotations %v", web.Annotations)
	})
	record := `"f:` + v1alpha1.AnnotationAllocatedAddresses + `"`
	if !strings.Contains(ownedBy(web, v1alpha1.FieldManagerCCM), record) {
		t.Errorf("%s does not own the record: %s", v1alpha1.FieldManagerCCM, ownedBy(web, v1alpha1.FieldManagerCCM))
	}
	if owned := ownedBy(web, v1alpha1.FieldManagerCCM); strings.Contains(owned, `"f:spec"`) {
		t.Errorf("%s owns spec fields: %s", v1alpha1.FieldManagerCCM, owned)
	}
	for _, mf := range web.ManagedFields {
		if mf.Manager != v1alpha1.FieldManagerCCM && strings.Contains(string(mf.FieldsV1.Raw), record) {
			t.Errorf("manager %s owns the record", mf.Manager)
		}
	}

	// A GitOps tool applies the manifest, which does not list the record: no drift either way.
	manifest := corev1ac.Service("web", "default").WithSpec(corev1ac.ServiceSpec().
		WithType(v1.ServiceTypeLoadBalancer).WithSelector(map[string]string{"app": "web"}).
		WithPorts(corev1ac.ServicePort().WithName("tcp-80").WithProtocol(v1.ProtocolTCP).WithPort(80).WithTargetPort(intstr.FromInt32(80))))
	if _, err := e.client.CoreV1().Services("default").Apply(e.ctx, manifest, metav1.ApplyOptions{FieldManager: "gitops"}); err != nil {
		t.Fatalf("apply the manifest: %v", err)
	}
	web = e.get("web")
	if web.Annotations[v1alpha1.AnnotationAllocatedAddresses] != addr || strings.Contains(ownedBy(web, "gitops"), record) {
		t.Errorf("after the manifest's apply: record %q, gitops owns %s", web.Annotations[v1alpha1.AnnotationAllocatedAddresses], ownedBy(web, "gitops"))
	}

	// Deleted and created again from its manifest plus the record, without status: same address,
	// although the next fresh address would be another one.
	e.delete("web")
	e.waitGone("web")
	e.service("web", withAnnotation(v1alpha1.AnnotationAllocatedAddresses, addr))
	web = e.waitIPs("web", addr)
	if c := allocated(web); c == nil || c.Reason != "Allocated" {
		t.Errorf("condition %s, want Allocated", condString(c))
	}

	// Taken by another Service meanwhile: another address, and the condition and an event say
	// which address and who holds it.
	e.delete("web")
	e.waitGone("web")
	e.service("thief", withAnnotation(v1alpha1.AnnotationIPs, addr))
	e.waitIPs("thief", addr)
	e.service("web", withAnnotation(v1alpha1.AnnotationAllocatedAddresses, addr))
	web = e.waitAllocated("web", 1)
	got := ingressIPs(web)[0]
	if got == addr {
		t.Fatalf("web got %s, which thief holds", addr)
	}
	c := allocated(web)
	if c.Reason != "RecordedAddressTaken" || !strings.Contains(c.Message, addr) || !strings.Contains(c.Message, "default/thief") || !strings.Contains(c.Message, got) {
		t.Errorf("condition %s, want RecordedAddressTaken naming %s, default/thief and %s", condString(c), addr, got)
	}
	if msg := e.waitEvent("web", "RecordedAddressTaken"); !strings.Contains(msg, addr) || !strings.Contains(msg, "default/thief") {
		t.Errorf("event %q does not name %s and default/thief", msg, addr)
	}
	e.eventually("the record to follow the new address", func() (bool, string) {
		ann := e.get("web").Annotations[v1alpha1.AnnotationAllocatedAddresses]
		return ann == got, ann
	})
	// The condition keeps saying it on later syncs.
	e.settle("marker")
	if c := allocated(e.get("web")); c.Reason != "RecordedAddressTaken" {
		t.Errorf("later condition %s, want it to keep saying RecordedAddressTaken", condString(c))
	}
}

func TestRecordOfAnotherFamilyOrOutsideEveryPoolIsIgnoredWithAnEvent(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.122.0/28", "fd31:0:122::/120"))
	e.startCCM("ccm")
	cases := map[string]string{
		"other-family": "fd31:0:122::7",
		"outside":      "192.0.2.7",
		"garbage":      "not-an-address",
	}
	for name, record := range cases {
		e.service(name, withAnnotation(v1alpha1.AnnotationAllocatedAddresses, record))
	}
	for name, record := range cases {
		svc := e.waitAllocated(name, 1)
		inRange(t, ingressIPs(svc)[0], "172.31.122.0/28")
		if msg := e.waitEvent(name, "RecordIgnored"); !strings.Contains(msg, record) {
			t.Errorf("%s: event %q does not name %s", name, msg, record)
		}
	}
	// Told once, not in a loop.
	time.Sleep(2 * time.Second)
	for name := range cases {
		for _, ev := range e.events("default", name) {
			if ev.Reason == "RecordIgnored" && ev.Count > 1 {
				t.Errorf("%s: RecordIgnored told %d times", name, ev.Count)
			}
		}
	}
}
