package provider

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// loadBalancer is ironlb's cloudprovider.LoadBalancer: a load balancer is a set of addresses
// held by a Service. Making them reachable is the speakers' job, so nodes play no part here.
type loadBalancer struct {
	cloud *Cloud
	// namespaceLabels looks up a namespace's labels for serviceAllocation.namespaceSelector; the
	// service controller sets it once its informers run.
	namespaceLabels atomic.Pointer[func(string) map[string]string]
}

var _ cloudprovider.LoadBalancer = (*loadBalancer)(nil)

func serviceKey(svc *v1.Service) string { return svc.Namespace + "/" + svc.Name }

// GetLoadBalancer reports the addresses the Service holds.
func (lb *loadBalancer) GetLoadBalancer(_ context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	addrs := lb.cloud.alloc.Holding(serviceKey(svc))
	if len(addrs) == 0 {
		return nil, false, nil
	}
	return loadBalancerStatus(addrs, svc), true, nil
}

// GetLoadBalancerName is the name every cloud provider derives from the Service's UID.
func (lb *loadBalancer) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}

// EnsureLoadBalancer allocates the Service's addresses, or confirms the ones it holds.
func (lb *loadBalancer) EnsureLoadBalancer(_ context.Context, _ string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	res, err := lb.ensure(svc, nil)
	if err != nil {
		return nil, err
	}
	return loadBalancerStatus(res.Addrs, svc), nil
}

// UpdateLoadBalancer is called when nodes change. Which node answers for an address is decided
// by the speakers, so there is nothing to do.
func (lb *loadBalancer) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}

// EnsureLoadBalancerDeleted releases the Service's addresses.
func (lb *loadBalancer) EnsureLoadBalancerDeleted(_ context.Context, _ string, svc *v1.Service) error {
	lb.release(serviceKey(svc))
	return nil
}

// release frees what the Service holds. held is everything it held; freed is what no other
// Service holds (a shared address stays until its last holder goes).
func (lb *loadBalancer) release(key string) (held, freed []netip.Addr) {
	held = lb.cloud.alloc.Holding(key)
	return held, lb.cloud.alloc.Release(key)
}

// ensure runs the allocator for svc; behind are the lines where others waited longer. On failure
// the result still carries the addresses the Service keeps.
func (lb *loadBalancer) ensure(svc *v1.Service, behind []ipam.Line) (ipam.Result, error) {
	req, err := lb.request(svc)
	if err != nil {
		return ipam.Result{Addrs: lb.cloud.alloc.Holding(req.Service)}, err
	}
	req.Behind = behind
	return lb.cloud.alloc.Allocate(req)
}

func (lb *loadBalancer) request(svc *v1.Service) (ipam.Request, error) {
	var nsLabels map[string]string
	if f := lb.namespaceLabels.Load(); f != nil {
		nsLabels = (*f)(svc.Namespace)
	}
	return requestFor(svc, nsLabels, lb.cloud.opts.OtherCloudsInternal)
}

// restore records the addresses svc holds, before any allocation happens.
func (lb *loadBalancer) restore(svc *v1.Service, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	req, err := lb.request(svc)
	if err != nil {
		// A malformed annotation must not cost the Service its address: hold it as it is.
		req.IPs, req.Pools = nil, nil
	}
	req.From = svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	return lb.cloud.alloc.Restore(req, addrs)
}

// ingressAddrs reads the addresses in a Service's status.
func ingressAddrs(svc *v1.Service) []netip.Addr { return statusAddrs(&svc.Status.LoadBalancer) }

func statusAddrs(st *v1.LoadBalancerStatus) []netip.Addr {
	var out []netip.Addr
	for _, ing := range st.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// loadBalancerStatus is what .status.loadBalancer shows for addrs.
func loadBalancerStatus(addrs []netip.Addr, svc *v1.Service) *v1.LoadBalancerStatus {
	st := &v1.LoadBalancerStatus{}
	vip := v1.LoadBalancerIPModeVIP
	for _, a := range addrs {
		ing := v1.LoadBalancerIngress{IP: a.String(), IPMode: &vip}
		for _, p := range svc.Spec.Ports {
			ing.Ports = append(ing.Ports, v1.PortStatus{Port: p.Port, Protocol: p.Protocol})
		}
		st.Ingress = append(st.Ingress, ing)
	}
	return st
}

// allocError returns the allocator's error, or wraps any other error as one.
func allocError(err error) *ipam.Error {
	var e *ipam.Error
	if errors.As(err, &e) {
		return e
	}
	return &ipam.Error{Reason: ipam.ReasonInvalidRequest, Message: err.Error()}
}
