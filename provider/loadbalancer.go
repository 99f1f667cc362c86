package provider

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// loadBalancer is ironlb's cloudprovider.LoadBalancer: a load balancer is a set of addresses
// held by a Service. Making them reachable is the speakers' job, so nodes play no part here.
//
// It is the only way from Services to the allocator. ironlb's own service controller drives it
// through the upstream methods, as the stock controller of k8s.io/cloud-provider drives any cloud
// through its balancer, and the stock controller can drive it alone. What the upstream
// signatures cannot carry travels beside them, so they stay the upstream ones: the waiting lines
// a Service stands behind go in, and the allocator's full result (pool, warnings, recorded
// addresses not given back, addresses freed) comes out, through an allocation in the context
// (withAllocation); a refusal is an *ipam.Error, found with errors.As. A caller that sets no
// allocation, such as the stock controller, gets the plain upstream behaviour.
//
// Restoring what Services already hold is a step of its own (restore), not part of
// EnsureLoadBalancer: the upstream interface has no start-up step, and the allocator must learn
// every Service's addresses, oldest Service first, before it hands out any. EnsureLoadBalancer
// sees one Service at a time in queue order; a Service it served before an older one was seen
// could take the older one's address.
type loadBalancer struct {
	cloud *Cloud
	// namespaceLabels looks up a namespace's labels for serviceAllocation.namespaceSelector; the
	// service controller sets it once its informers run.
	namespaceLabels atomic.Pointer[func(string) map[string]string]
}

var _ cloudprovider.LoadBalancer = (*loadBalancer)(nil)

// allocation is what ironlb's service controller exchanges with the load balancer beyond the
// upstream signatures (see loadBalancer).
type allocation struct {
	// behind (in) are the lines in which other Services waited longer (see waitline.go).
	behind []ipam.Line
	// result (out) is the allocator's result of EnsureLoadBalancer; on failure, what the Service
	// keeps.
	result ipam.Result
	// freed (out) are the addresses EnsureLoadBalancerDeleted left without holder (a shared
	// address stays until its last holder goes).
	freed []netip.Addr
}

type allocationKey struct{}

// withAllocation returns a context that carries a to the load balancer's methods.
func withAllocation(ctx context.Context, a *allocation) context.Context {
	return context.WithValue(ctx, allocationKey{}, a)
}

// allocationOf returns the allocation ctx carries, or a fresh one nobody reads.
func allocationOf(ctx context.Context) *allocation {
	if a, ok := ctx.Value(allocationKey{}).(*allocation); ok {
		return a
	}
	return &allocation{}
}

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

// EnsureLoadBalancer allocates the Service's addresses, or confirms the ones it holds. A refusal
// is an *ipam.Error; the Service then keeps what it holds (allocation.result).
func (lb *loadBalancer) EnsureLoadBalancer(ctx context.Context, _ string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	a := allocationOf(ctx)
	req, err := lb.request(svc)
	if err == nil {
		req.Behind = a.behind
		a.result, err = lb.cloud.alloc.Allocate(req)
	} else {
		a.result = ipam.Result{Addrs: lb.cloud.alloc.Holding(req.Service)}
	}
	if err != nil {
		return nil, fmt.Errorf("allocate addresses for %s: %w", req.Service, err)
	}
	return loadBalancerStatus(a.result.Addrs, svc), nil
}

// UpdateLoadBalancer is called when nodes change. Which node answers for an address is decided
// by the speakers, so there is nothing to do.
func (lb *loadBalancer) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}

// EnsureLoadBalancerDeleted releases the Service's addresses.
func (lb *loadBalancer) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *v1.Service) error {
	allocationOf(ctx).freed = lb.cloud.alloc.Release(serviceKey(svc))
	return nil
}

func (lb *loadBalancer) request(svc *v1.Service) (ipam.Request, error) {
	var nsLabels map[string]string
	if f := lb.namespaceLabels.Load(); f != nil {
		nsLabels = (*f)(svc.Namespace)
	}
	return requestFor(svc, nsLabels, lb.cloud.opts.OtherCloudsInternal)
}

// restore records the addresses svc holds, before any allocation happens (see loadBalancer for
// why this is not EnsureLoadBalancer).
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
