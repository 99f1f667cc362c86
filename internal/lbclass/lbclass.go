// Package lbclass decides which Services are ironlb's, the same way in
// ironlb-ccm and ironlb-speaker.
package lbclass

import v1 "k8s.io/api/core/v1"

// Classifier decides which Services ironlb handles.
type Classifier struct {
	Class           string // the loadBalancerClass that is ironlb's
	HandleClassless bool
}

// Handles reports whether svc is an ironlb LoadBalancer. Services of any other class are never
// touched.
func (c Classifier) Handles(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return c.HandleClassless
	}
	return *svc.Spec.LoadBalancerClass == c.Class
}
