// Package provider is ironlb's cloud provider for k8s.io/cloud-provider: the LoadBalancer
// implementation, a minimal InstancesV2 for node initialization, and the controllers that drive
// them (Services of ironlb's class and classless ones alike, and IPPool status).
package provider

import (
	"io"

	cloudprovider "k8s.io/cloud-provider"

	"github.com/ironlb/ironlb/internal/health"
	"github.com/ironlb/ironlb/internal/lbclass"
	"github.com/ironlb/ironlb/provider/ipam"
)

// ProviderName is the value of --cloud-provider that selects ironlb.
const ProviderName = "ironlb"

// Options are ironlb's own settings of the cloud-controller-manager.
type Options struct {
	// LoadBalancerClass is the spec.loadBalancerClass ironlb handles.
	LoadBalancerClass string
	// HandleClassless makes ironlb handle Services that set no loadBalancerClass.
	HandleClassless bool
	// OtherCloudsInternal honours the internal load balancer annotations of other clouds.
	OtherCloudsInternal bool
	// Health is what ironlb-ccm reports to the kubelet's probes (nil: nothing). The service
	// controller, once this replica leads, is not ready until it has restored what Services
	// hold and served those that waited; no pass of its workers may run on for minutes.
	Health *health.Status
}

// Cloud implements cloudprovider.Interface for ironlb.
type Cloud struct {
	opts      Options
	classify  lbclass.Classifier
	alloc     *ipam.Allocator
	instances instances
	lb        *loadBalancer
}

var _ cloudprovider.Interface = (*Cloud)(nil)

// New returns the ironlb cloud provider.
func New(opts Options) *Cloud {
	c := &Cloud{
		opts:     opts,
		classify: lbclass.Classifier{Class: opts.LoadBalancerClass, HandleClassless: opts.HandleClassless},
		alloc:    ipam.New(),
	}
	c.lb = &loadBalancer{cloud: c}
	return c
}

// Register makes the provider known to k8s.io/cloud-provider under ProviderName.
func Register(opts *Options) {
	cloudprovider.RegisterCloudProvider(ProviderName, func(io.Reader) (cloudprovider.Interface, error) {
		return New(*opts), nil
	})
}

// Initialize is part of cloudprovider.Interface. ironlb's controllers get their clients from the
// controller manager, so there is nothing to set up here.
func (c *Cloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}

// LoadBalancer returns ironlb's load balancer implementation.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return c.lb, true }

// InstancesV2 returns the minimal node metadata that lets nodes of kubelets run with
// --cloud-provider=external be initialized.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) { return c.instances, true }

// Instances is superseded by InstancesV2.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// Zones is superseded by InstancesV2.
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not supported.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not supported: pod routing is the CNI's job on bare metal.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "ironlb".
func (c *Cloud) ProviderName() string { return ProviderName }

// HasClusterID is true: ironlb needs no cluster ID.
func (c *Cloud) HasClusterID() bool { return true }
