package lbclass

import (
	"testing"

	v1 "k8s.io/api/core/v1"
)

func ptr(s string) *string { return &s }

func TestClassifierHandles_OnlyLoadBalancersOfOurClassOrClassless(t *testing.T) {
	const ours = "ironlb.io/ironlb"
	tests := []struct {
		name            string
		typ             v1.ServiceType
		class           *string
		handleClassless bool
		want            bool
	}{
		{"classless LoadBalancer with HandleClassless", v1.ServiceTypeLoadBalancer, nil, true, true},
		{"classless LoadBalancer without HandleClassless", v1.ServiceTypeLoadBalancer, nil, false, false},
		{"LoadBalancer of our class", v1.ServiceTypeLoadBalancer, ptr(ours), false, true},
		{"LoadBalancer of our class with HandleClassless", v1.ServiceTypeLoadBalancer, ptr(ours), true, true},
		{"LoadBalancer of another class", v1.ServiceTypeLoadBalancer, ptr("example.com/other"), true, false},
		{"LoadBalancer of another class without HandleClassless", v1.ServiceTypeLoadBalancer, ptr("example.com/other"), false, false},
		{"LoadBalancer of a class that only looks like ours", v1.ServiceTypeLoadBalancer, ptr("ironlb.io/ironlb2"), true, false},
		{"ClusterIP", v1.ServiceTypeClusterIP, nil, true, false},
		{"NodePort", v1.ServiceTypeNodePort, nil, true, false},
		{"ExternalName", v1.ServiceTypeExternalName, nil, true, false},
		{"ClusterIP with our class", v1.ServiceTypeClusterIP, ptr(ours), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &v1.Service{}
			svc.Spec.Type = tt.typ
			svc.Spec.LoadBalancerClass = tt.class
			c := Classifier{Class: ours, HandleClassless: tt.handleClassless}
			if got := c.Handles(svc); got != tt.want {
				t.Errorf("Handles = %v, want %v", got, tt.want)
			}
		})
	}
}
