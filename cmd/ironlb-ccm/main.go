// Command ironlb-ccm is ironlb's cloud-controller-manager: it gives LoadBalancer Services
// addresses from IPPools, initializes nodes of kubelets run with --cloud-provider=external, and
// creates the speakers' cluster key Secret when it is missing.
package main

import (
	"os"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/gctarget"
	"github.com/ironlb/ironlb/internal/health"
	"github.com/ironlb/ironlb/provider"
)

func main() {
	opts := &provider.Options{
		LoadBalancerClass:   v1alpha1.DefaultLoadBalancerClass,
		HandleClassless:     true,
		OtherCloudsInternal: true,
		Health:              health.New(health.DefaultStuckAfter),
	}
	provider.Register(opts)

	s, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("unable to initialize command options: %v", err)
	}
	setDefaults(s)

	fss := cliflag.NamedFlagSets{}
	fs := fss.FlagSet("ironlb")
	fs.StringVar(&opts.LoadBalancerClass, "load-balancer-class", opts.LoadBalancerClass, "The spec.loadBalancerClass of Services ironlb handles.")
	fs.BoolVar(&opts.HandleClassless, "handle-classless", opts.HandleClassless, "Also handle LoadBalancer Services that set no spec.loadBalancerClass.")
	fs.BoolVar(&opts.OtherCloudsInternal, "other-clouds-internal-annotations", opts.OtherCloudsInternal,
		"Treat the internal load balancer annotations of other clouds (GKE, AWS, Azure, IBM, OpenStack, Huawei CCE, Tencent, Alibaba, Oracle) like ironlb's own.")
	addClusterKeyFlags(fs)
	addServingFlags(fss.FlagSet("ironlb serving"))
	gcPercent = gctarget.Flag(fs)

	controllers := provider.ControllerInitFuncConstructors()
	controllers[clusterKeyControllerName] = clusterKeyController()
	cmd := app.NewCloudControllerManagerCommand(s, cloudInitializer, controllers,
		names.CCMControllerAliases(), fss, wait.NeverStop)
	cmd.Use = "ironlb-ccm"
	startServing(cmd, opts.Health)
	os.Exit(cli.Run(cmd))
}

// setDefaults changes the defaults that do not fit ironlb. The stock service controller runs one
// worker at 20 client requests per second, which caps it far below what the API server takes.
func setDefaults(s *options.CloudControllerManagerOptions) {
	s.KubeCloudShared.CloudProvider.Name = provider.ProviderName
	s.KubeCloudShared.ConfigureCloudRoutes = false
	s.KubeCloudShared.AllocateNodeCIDRs = false
	s.ServiceController.ConcurrentServiceSyncs = 16
	s.Generic.ClientConnection.QPS = 500
	s.Generic.ClientConnection.Burst = 1000
	s.Generic.LeaderElection.LeaderElect = true
	s.Generic.LeaderElection.ResourceName = "ironlb-ccm"
	s.Generic.LeaderElection.ResourceNamespace = "kube-system"
	s.Generic.MinResyncPeriod.Duration = 12 * time.Hour
}

func cloudInitializer(c *cloudcontrollerconfig.CompletedConfig) cloudprovider.Interface {
	name := c.ComponentConfig.KubeCloudShared.CloudProvider.Name
	if name != provider.ProviderName {
		klog.Fatalf("ironlb-ccm runs only the %q cloud provider, not %q", provider.ProviderName, name)
	}
	cloud, err := cloudprovider.InitCloudProvider(name, c.ComponentConfig.KubeCloudShared.CloudProvider.CloudConfigFile)
	if err != nil {
		klog.Fatalf("cloud provider could not be initialized: %v", err)
	}
	return cloud
}
