package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/internal/gctarget"
	"github.com/ironlb/ironlb/internal/health"
	"github.com/ironlb/ironlb/internal/version"
)

var (
	metricsAddr, healthAddr string
	metricsProfiling        bool
	gcPercent               *int // --gc-percent
)

// addServingFlags adds plain-HTTP endpoints for Prometheus and kubelet probes, beside the
// controller manager's authenticated --secure-port.
func addServingFlags(fs *pflag.FlagSet) {
	fs.StringVar(&metricsAddr, "metrics-bind-address", ":10290", "Address for plain-HTTP /metrics; \"0\" disables it.")
	fs.StringVar(&healthAddr, "health-probe-bind-address", ":10291", "Address for plain-HTTP /healthz (live: no sync stuck) and /readyz (ready: standing by for the Lease, or leading with every Service restored); \"0\" disables it.")
	// --profiling is the controller manager's, on the authenticated --secure-port.
	fs.BoolVar(&metricsProfiling, "metrics-profiling", false, "Serve Go's profiles (/debug/pprof/) on the plain-HTTP metrics address.")
}

// startServing starts the endpoints once flags are parsed, before the controller manager runs:
// /readyz and /healthz answer from status.
// --version (and --version=raw) print ironlb's version, not the Kubernetes libraries' one.
func startServing(cmd *cobra.Command, status *health.Status) {
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if f := c.Flags().Lookup("version"); f != nil && (f.Value.String() == "true" || f.Value.String() == "raw") {
			fmt.Println(version.Print(cmd.Use, f.Value.String()))
			os.Exit(0)
		}
		klog.V(2).InfoS("Go collector", "gcPercent", gctarget.Apply(c.Flags(), *gcPercent))
		metrics := map[string]http.Handler{"/metrics": legacyregistry.Handler()}
		if metricsProfiling {
			metrics["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
			metrics["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
		}
		serve("metrics", metricsAddr, metrics)
		serve("health", healthAddr, status.Handlers())
		return run(c, args)
	}
}

func serve(what, addr string, routes map[string]http.Handler) {
	if addr == "" || addr == "0" {
		return
	}
	mux := http.NewServeMux()
	for path, h := range routes {
		mux.Handle(path, h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		klog.Fatalf("listen for %s on %s: %v", what, addr, err)
	}
	klog.InfoS("Serving", "what", what, "address", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
}
