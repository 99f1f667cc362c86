// Package v1alpha1 holds ironlb's API types: IPPool and BGPPeer.
//
// +kubebuilder:object:generate=true
// +groupName=ironlb.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SchemeGroupVersion is the group and version of every type here.
var SchemeGroupVersion = schema.GroupVersion{Group: "ironlb.io", Version: "v1alpha1"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers the types with a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &IPPool{}, &IPPoolList{}, &BGPPeer{}, &BGPPeerList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
