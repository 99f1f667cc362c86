package provider

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// cloudInternal is how another cloud marks a Service internal: the annotation, and how its value
// reads. Manifests written for those clouds keep their meaning on bare metal.
type cloudInternal struct {
	annotation string
	internal   func(value string) (bool, error)
}

func boolValue(v string) (bool, error) { return strconv.ParseBool(v) }

func oneOf(internal, external string) func(string) (bool, error) {
	return func(v string) (bool, error) {
		switch {
		case strings.EqualFold(v, internal):
			return true, nil
		case strings.EqualFold(v, external):
			return false, nil
		}
		return false, fmt.Errorf("want %q or %q", internal, external)
	}
}

// cloudInternalAnnotations are the internal load balancer annotations of the clouds that
// Kubernetes' Service documentation lists.
var cloudInternalAnnotations = []cloudInternal{
	{"networking.gke.io/load-balancer-type", oneOf("Internal", "External")},
	{"service.beta.kubernetes.io/aws-load-balancer-internal", boolValue},
	{"service.beta.kubernetes.io/azure-load-balancer-internal", boolValue},
	{"service.kubernetes.io/ibm-load-balancer-cloud-provider-ip-type", oneOf("private", "public")},
	{"service.beta.kubernetes.io/openstack-internal-load-balancer", boolValue},
	{"service.beta.kubernetes.io/cce-load-balancer-internal-vpc", boolValue},
	// Tencent Cloud names the subnet of the internal load balancer: any subnet means internal.
	{"service.kubernetes.io/qcloud-loadbalancer-internal-subnetid", func(v string) (bool, error) { return v != "", nil }},
	{"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type", oneOf("intranet", "internet")},
	{"service.beta.kubernetes.io/oci-load-balancer-internal", boolValue},
}

// isInternal reads the internal annotations. ironlb's own annotation wins; otherwise any other
// cloud's annotation that says internal makes the Service internal.
func isInternal(ann map[string]string, honourOtherClouds bool) (bool, error) {
	if v, ok := ann[v1alpha1.AnnotationInternal]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", v1alpha1.AnnotationInternal, v)
		}
		return b, nil
	}
	if !honourOtherClouds {
		return false, nil
	}
	// Every present annotation is read, so a malformed one is reported whatever the others say.
	internal := false
	for _, c := range cloudInternalAnnotations {
		v, ok := ann[c.annotation]
		if !ok {
			continue
		}
		b, err := c.internal(v)
		if err != nil {
			return false, fmt.Errorf("annotation %s=%q: %v", c.annotation, v, err)
		}
		internal = internal || b
	}
	return internal, nil
}

// requestFor turns a Service into what it asks of the allocator. An error means the Service's
// own annotations or spec are malformed; it is reported on that Service only.
func requestFor(svc *v1.Service, nsLabels map[string]string, honourOtherClouds bool) (ipam.Request, error) {
	req := ipam.Request{
		Service:         svc.Namespace + "/" + svc.Name,
		Namespace:       svc.Namespace,
		ServiceLabels:   svc.Labels,
		NamespaceLabels: nsLabels,
		Policy:          ipam.SingleStack,
		SharingKey:      svc.Annotations[v1alpha1.AnnotationSharingKey],
	}
	// What the record holds that cannot be read is reported by the controller, never refused:
	// a Service must not fail for what ironlb wrote on it.
	req.Prefer, _ = recordedAddrs(svc.Annotations)
	// The address families follow the ClusterIP's: kube-proxy programs a load balancer address
	// only for the families the Service has.
	for _, f := range svc.Spec.IPFamilies {
		req.Families = append(req.Families, ipam.Family(f))
	}
	if len(req.Families) == 0 {
		// The API server always fills ipFamilies; a Service without them predates dual-stack.
		req.Families = []ipam.Family{ipam.IPv4}
	}
	if svc.Spec.IPFamilyPolicy != nil {
		req.Policy = ipam.Policy(*svc.Spec.IPFamilyPolicy)
	}
	for _, p := range svc.Spec.Ports {
		req.Ports = append(req.Ports, ipam.Port{Protocol: string(p.Protocol), Port: p.Port})
	}

	internal, err := isInternal(svc.Annotations, honourOtherClouds)
	if err != nil {
		return req, invalid(err.Error())
	}
	req.Internal = internal

	if v, ok := svc.Annotations[v1alpha1.AnnotationPool]; ok {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				return req, invalid(fmt.Sprintf("annotation %s=%q: empty pool name", v1alpha1.AnnotationPool, v))
			}
			req.Pools = append(req.Pools, name)
		}
	}

	if v, ok := svc.Annotations[v1alpha1.AnnotationIPs]; ok {
		for _, s := range strings.Split(v, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || a.Zone() != "" {
				return req, invalid(fmt.Sprintf("annotation %s=%q: %q is not an IP address", v1alpha1.AnnotationIPs, v, strings.TrimSpace(s)))
			}
			req.IPs = append(req.IPs, a.Unmap())
		}
	}
	if s := svc.Spec.LoadBalancerIP; s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return req, invalid(fmt.Sprintf("spec.loadBalancerIP %q is not an IP address", s))
		}
		a = a.Unmap()
		switch {
		case len(req.IPs) == 0:
			req.IPs = []netip.Addr{a}
		case !containsAddr(req.IPs, a):
			return req, invalid(fmt.Sprintf("spec.loadBalancerIP %s is not among %s=%q; set only the annotation", a, v1alpha1.AnnotationIPs, svc.Annotations[v1alpha1.AnnotationIPs]))
		}
	}
	return req, nil
}

func invalid(msg string) *ipam.Error {
	return &ipam.Error{Reason: ipam.ReasonInvalidRequest, Message: msg}
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
