package provider

import (
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// testServiceWithCondition is a Service at generation 4 whose status carries cond, if any.
func testServiceWithCondition(cond *metav1.Condition) *v1.Service {
	svc := testLBService(nil)
	svc.Generation = 4
	if cond != nil {
		svc.Status.Conditions = []metav1.Condition{*cond}
	}
	return svc
}

func TestAllocatedCondition_SuccessNamesAddressesAndPool(t *testing.T) {
	res := ipam.Result{Addrs: testAddrs("172.31.10.5", "fd31::5"), Pool: "public"}
	got := allocatedCondition(testServiceWithCondition(nil), res, nil, nil)
	if got.Type != v1alpha1.ConditionIPAllocated || got.Status != metav1.ConditionTrue || got.Reason != "Allocated" {
		t.Errorf("condition = %s %s/%s, want %s True/Allocated", got.Type, got.Status, got.Reason, v1alpha1.ConditionIPAllocated)
	}
	if want := "172.31.10.5,fd31::5 from pool public"; got.Message != want {
		t.Errorf("message = %q, want %q", got.Message, want)
	}
	if got.ObservedGeneration != 4 {
		t.Errorf("observedGeneration = %d, want the Service's 4", got.ObservedGeneration)
	}
}

func TestAllocatedCondition_FailureIsFalseWithTheAllocatorsReason(t *testing.T) {
	tests := []struct {
		name        string
		res         ipam.Result
		aerr        *ipam.Error
		wantMessage string
	}{
		{
			name:        "Service without addresses",
			aerr:        &ipam.Error{Reason: ipam.ReasonPoolExhausted, Message: "no free IPv4 address in pool public"},
			wantMessage: "no free IPv4 address in pool public",
		},
		{
			name:        "invalid request",
			aerr:        &ipam.Error{Reason: ipam.ReasonInvalidRequest, Message: `annotation ironlb.io/pool="a,": empty pool name`},
			wantMessage: `annotation ironlb.io/pool="a,": empty pool name`,
		},
		{
			name:        "Service keeps the addresses it holds",
			res:         ipam.Result{Addrs: testAddrs("172.31.10.5", "fd31::5"), Pool: "public"},
			aerr:        &ipam.Error{Reason: ipam.ReasonInUse, Message: "172.31.10.9 is held by shop/other"},
			wantMessage: "172.31.10.9 is held by shop/other; the Service keeps 172.31.10.5,fd31::5",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := allocatedCondition(testServiceWithCondition(nil), tt.res, tt.aerr, nil)
			if got.Status != metav1.ConditionFalse || got.Reason != string(tt.aerr.Reason) {
				t.Errorf("condition %s/%s, want False/%s", got.Status, got.Reason, tt.aerr.Reason)
			}
			if got.Message != tt.wantMessage {
				t.Errorf("message = %q, want %q", got.Message, tt.wantMessage)
			}
			if got.Type != v1alpha1.ConditionIPAllocated || got.ObservedGeneration != 4 {
				t.Errorf("type %s generation %d, want %s 4", got.Type, got.ObservedGeneration, v1alpha1.ConditionIPAllocated)
			}
		})
	}
}

func TestAllocatedCondition_WarningsKeepItTrueWithReasonAddressNotInPool(t *testing.T) {
	res := ipam.Result{
		Addrs:    testAddrs("172.31.10.5", "fd31::5"),
		Warnings: []string{"172.31.10.5 is in no pool any more", "fd31::5 is in no pool any more"},
	}
	got := allocatedCondition(testServiceWithCondition(nil), res, nil, nil)
	if got.Status != metav1.ConditionTrue || got.Reason != EventAddressNotInPool {
		t.Errorf("condition %s/%s, want True/%s", got.Status, got.Reason, EventAddressNotInPool)
	}
	if want := "172.31.10.5 is in no pool any more; fd31::5 is in no pool any more"; got.Message != want {
		t.Errorf("message = %q, want %q", got.Message, want)
	}
}

func TestAllocatedCondition_TransitionTimeKeptWhileStatusUnchanged(t *testing.T) {
	since := metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	ok := ipam.Result{Addrs: testAddrs("172.31.10.5"), Pool: "public"}
	warn := ipam.Result{Addrs: testAddrs("172.31.10.5"), Warnings: []string{"172.31.10.5 is in no pool"}}
	fail := &ipam.Error{Reason: ipam.ReasonPoolExhausted, Message: "exhausted"}
	tests := []struct {
		name string
		prev *metav1.Condition
		res  ipam.Result
		aerr *ipam.Error
		keep bool
	}{
		{"True stays True", &metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated", LastTransitionTime: since}, ok, nil, true},
		{"True stays True with a new reason", &metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated", LastTransitionTime: since}, warn, nil, true},
		{"False stays False", &metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionFalse, Reason: "NoEligiblePool", LastTransitionTime: since}, ipam.Result{}, fail, true},
		{"False becomes True", &metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionFalse, Reason: "PoolExhausted", LastTransitionTime: since}, ok, nil, false},
		{"True becomes False", &metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated", LastTransitionTime: since}, ipam.Result{}, fail, false},
		{"another component's condition is not ours", &metav1.Condition{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: "Announced", LastTransitionTime: since}, ok, nil, false},
		{"first condition", nil, ok, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now().Add(-time.Second)
			got := allocatedCondition(testServiceWithCondition(tt.prev), tt.res, tt.aerr, nil)
			if tt.keep {
				if !got.LastTransitionTime.Equal(&since) {
					t.Errorf("lastTransitionTime = %v, want it kept at %v", got.LastTransitionTime, since)
				}
				return
			}
			if got.LastTransitionTime.Time.Before(start) {
				t.Errorf("lastTransitionTime = %v, want now", got.LastTransitionTime)
			}
		})
	}
}

func TestCachedServiceChanged_OnlyChangesThatMatterToIronlbCount(t *testing.T) {
	base := func() *v1.Service {
		svc := testLBService(map[string]string{v1alpha1.AnnotationPool: "public"})
		svc.ResourceVersion = "10"
		svc.Labels = map[string]string{"app": "web"}
		svc.Finalizers = []string{v1alpha1.LoadBalancerCleanupFinalizer}
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.31.10.5"}}
		svc.Status.Conditions = []metav1.Condition{
			{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated", Message: "172.31.10.5 from pool public"},
		}
		return svc
	}
	tests := []struct {
		name   string
		change func(*v1.Service)
		want   bool
	}{
		{"nothing but the resourceVersion", func(s *v1.Service) { s.ResourceVersion = "11" }, false},
		{"managed fields", func(s *v1.Service) {
			s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}}
		}, false},
		{"a speaker writes its Announced condition", func(s *v1.Service) {
			s.Status.Conditions = append(s.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: "L2"})
		}, false},
		{"another component writes its own condition", func(s *v1.Service) {
			s.Status.Conditions = append([]metav1.Condition{{Type: "example.com/Probed", Status: metav1.ConditionFalse, Reason: "Timeout"}}, s.Status.Conditions...)
		}, false},
		{"spec port", func(s *v1.Service) { s.Spec.Ports[0].Port = 8080 }, true},
		{"spec type", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }, true},
		{"spec class", func(s *v1.Service) { s.Spec.LoadBalancerClass = testStrPtr("example.com/other") }, true},
		{"spec loadBalancerIP", func(s *v1.Service) { s.Spec.LoadBalancerIP = "172.31.10.9" }, true},
		{"spec families", func(s *v1.Service) { s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol} }, true},
		{"spec family policy", func(s *v1.Service) {
			p := v1.IPFamilyPolicyRequireDualStack
			s.Spec.IPFamilyPolicy = &p
		}, true},
		{"spec port protocol", func(s *v1.Service) { s.Spec.Ports[0].Protocol = v1.ProtocolUDP }, true},
		{"annotation value", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationPool] = "backup" }, true},
		{"annotation added", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationSharingKey] = "dns" }, true},
		{"label", func(s *v1.Service) { s.Labels["tier"] = "web" }, true},
		{"finalizer removed", func(s *v1.Service) { s.Finalizers = nil }, true},
		{"deletion started", func(s *v1.Service) { now := metav1.Now(); s.DeletionTimestamp = &now }, true},
		{"loadBalancer ingress", func(s *v1.Service) { s.Status.LoadBalancer.Ingress[0].IP = "172.31.10.6" }, true},
		{"loadBalancer ingress removed", func(s *v1.Service) { s.Status.LoadBalancer = v1.LoadBalancerStatus{} }, true},
		{"our condition", func(s *v1.Service) { s.Status.Conditions[0].Status = metav1.ConditionFalse }, true},
		{"our condition removed", func(s *v1.Service) { s.Status.Conditions = nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := base(), base()
			tt.change(cur)
			if got := newCachedService(old).changed(newCachedService(cur)); got != tt.want {
				t.Errorf("changed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLoadBalancerStatus_OneVIPIngressPerAddressWithTheServicePorts(t *testing.T) {
	svc := testLBService(nil)
	svc.Spec.Ports = []v1.ServicePort{
		{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53, NodePort: 30053},
		{Name: "dns-udp", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053},
	}
	got := loadBalancerStatus(testAddrs("172.31.10.5", "fd31::5"), svc)
	vip := v1.LoadBalancerIPModeVIP
	ports := []v1.PortStatus{{Port: 53, Protocol: v1.ProtocolTCP}, {Port: 53, Protocol: v1.ProtocolUDP}}
	want := &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
		{IP: "172.31.10.5", IPMode: &vip, Ports: ports},
		{IP: "fd31::5", IPMode: &vip, Ports: ports},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loadBalancerStatus =\n%+v\nwant\n%+v", got, want)
	}
	for _, ing := range got.Ingress {
		if ing.Hostname != "" {
			t.Errorf("ingress %s has hostname %q", ing.IP, ing.Hostname)
		}
	}
	// Each ingress owns its ports, so that changing one does not change the other.
	got.Ingress[0].Ports[0].Port = 1
	if got.Ingress[1].Ports[0].Port != 53 {
		t.Error("ingress entries share one ports slice")
	}
}

func TestLoadBalancerStatus_NoAddressesMeansNoIngress(t *testing.T) {
	got := loadBalancerStatus(nil, testLBService(nil))
	if got == nil || len(got.Ingress) != 0 {
		t.Errorf("loadBalancerStatus(nil) = %+v, want an empty status", got)
	}
}

func TestJoinAddrs_CommaSeparatedCanonicalForm(t *testing.T) {
	if got := joinAddrs(testAddrs("172.31.10.5", "FD31:0::5")); got != "172.31.10.5,fd31::5" {
		t.Errorf("joinAddrs = %q", got)
	}
	if got := joinAddrs(nil); got != "" {
		t.Errorf("joinAddrs(nil) = %q, want empty", got)
	}
	if !strings.Contains(allocatedCondition(testServiceWithCondition(nil), ipam.Result{Addrs: testAddrs("fd31:0::5"), Pool: "v6"}, nil, nil).Message, "fd31::5") {
		t.Error("condition does not show the canonical IPv6 address")
	}
}
