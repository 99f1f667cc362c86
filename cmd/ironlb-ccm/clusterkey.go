package main

import (
	"context"
	"os"

	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"

	"github.com/ironlb/ironlb/internal/clusterkey"
)

// clusterKeyControllerName is the controller that creates the speakers' cluster key Secret when
// it is missing; --controllers=*,-cluster-key-controller turns it off for a key the operator
// brings.
const clusterKeyControllerName = "cluster-key-controller"

var clusterKeyNamespace string

func addClusterKeyFlags(fs *pflag.FlagSet) {
	def := os.Getenv("POD_NAMESPACE")
	if def == "" {
		def = "ironlb-system"
	}
	fs.StringVar(&clusterKeyNamespace, "cluster-key-namespace", def,
		"The speakers' namespace, where the controller "+clusterKeyControllerName+" creates the Secret "+clusterkey.SecretName+
			" when it is missing; $POD_NAMESPACE when set.")
}

// clusterKeyController runs clusterkey.Keeper. Like ironlb-ccm's other controllers it runs on
// the leader only: at start it creates the Secret if it is missing, and it watches the Secret to
// create it again if it is deleted. The Keeper only ever creates, so a leader change in the
// middle is harmless.
func clusterKeyController() app.ControllerInitFuncConstructor {
	return app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "ironlb-cluster-key"},
		Constructor: func(initCtx app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, _ cloudprovider.Interface) app.InitFunc {
			return func(ctx context.Context, _ genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
				client, err := cfg.ClientBuilder.Client(initCtx.ClientName)
				if err != nil {
					return nil, false, err
				}
				recorder := cfg.EventBroadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "ironlb-ccm"})
				go clusterkey.NewKeeper(client, clusterKeyNamespace, recorder).Run(ctx)
				return nil, true, nil
			}
		},
	}
}
