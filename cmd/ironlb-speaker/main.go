// Command ironlb-speaker makes the addresses ironlb-ccm assigns reachable:
// one per node (a DaemonSet with host networking), it answers ARP and NDP for
// the addresses of L2 pools that its node owns.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/gctarget"
	"github.com/ironlb/ironlb/internal/health"
	"github.com/ironlb/ironlb/internal/lbclass"
	"github.com/ironlb/ironlb/internal/version"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/l2"
	"github.com/ironlb/ironlb/speaker/member"
)

func main() {
	fs := pflag.NewFlagSet("ironlb-speaker", pflag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig; in-cluster configuration when empty.")
	node := fs.String("node-name", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	class := fs.String("load-balancer-class", v1alpha1.DefaultLoadBalancerClass, "The spec.loadBalancerClass that is ironlb's.")
	classless := fs.Bool("handle-classless", true, "Also announce Services with no loadBalancerClass.")
	metricsAddr := fs.String("metrics-bind-address", ":10292", "Address for plain-HTTP /metrics; \"0\" disables it.")
	healthAddr := fs.String("health-probe-bind-address", ":10293", "Address for plain-HTTP /healthz (live: no sync stuck) and /readyz (ready: caches synced, heartbeats and BGP server running, first sync done); \"0\" disables it.")
	peerPort := fs.Uint16("peer-port", member.DefaultPort, "UDP port of the heartbeats between speakers, on each node's InternalIP.")
	interval := fs.Duration("heartbeat-interval", member.DefaultInterval, "How often a speaker tells the others it is alive.")
	timeout := fs.Duration("heartbeat-timeout", member.DefaultTimeout, "How long a silent speaker counts as alive; its addresses move after that.")
	leaseDuration := fs.Duration("lease-duration", speaker.DefaultLeaseDuration, "How long a speaker's Lease stays fresh in the fallback, when heartbeats cannot flow; failover then takes about this long.")
	probeWindow := fs.Duration("l2-probe-window", l2.DefaultProbing.Window, "Before answering an address it takes over, a speaker asks the link who answers it (ARP probe, IPv6 duplicate address detection) and waits this long for an answer; it answers only once nobody else does, so two nodes never answer one address. 0 answers at once.")
	probeMaxWait := fs.Duration("l2-probe-max-wait", l2.DefaultProbing.MaxWait, "The longest a speaker waits for another host to stop answering an address it takes over; it then answers too and sends an AddressConflict event.")
	profiling := fs.Bool("profiling", false, "Serve Go's profiles (/debug/pprof/) on the metrics address.")
	qps := fs.Float32("kube-api-qps", 20, "Requests per second to the API server.")
	namespace := fs.String("namespace", envOr("POD_NAMESPACE", "ironlb-system"), "The speakers' namespace: their Leases, the cluster key Secret, and BGPPeer password Secrets that name none (default $POD_NAMESPACE).")
	memLimit := fs.String("memory-limit", "auto", "Soft limit of the Go runtime's memory (heap, stacks, runtime), past which it collects garbage more often: a quantity such as 96Mi, \"none\", or \"auto\": GOMEMLIMIT if set, else three quarters of the container's memory limit, else none.")
	gcPct := gctarget.Flag(fs)
	showVersion := fs.String("version", "false", "Print the version and quit; --version=raw prints it as JSON.")
	fs.Lookup("version").NoOptDefVal = "true"
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:])
	if *showVersion != "false" {
		fmt.Println(version.Print("ironlb-speaker", *showVersion))
		return
	}
	klog.InfoS("Starting", "version", version.Get("ironlb-speaker").String())
	limit, from, err := memoryLimit(*memLimit, os.Getenv("GOMEMLIMIT"), readContainerMemory())
	if err != nil {
		klog.ErrorS(err, "ironlb-speaker failed")
		klog.Flush()
		os.Exit(1)
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	klog.InfoS("Garbage collector", "memoryLimit", debug.SetMemoryLimit(-1), "memoryLimitFrom", from, "gcPercent", gctarget.Apply(fs, *gcPct))

	if err := run(*kubeconfig, speaker.Config{
		Node:              *node,
		Classifier:        lbclass.Classifier{Class: *class, HandleClassless: *classless},
		PeerPort:          *peerPort,
		HeartbeatInterval: *interval,
		HeartbeatTimeout:  *timeout,
		LeaseDuration:     *leaseDuration,
		L2Probing:         l2.Probing{Window: *probeWindow, MaxWait: *probeMaxWait},
		Namespace:         *namespace,
		Logger:            klog.Background().WithName("speaker"),
	}, *qps, *metricsAddr, *healthAddr, *profiling); err != nil {
		klog.ErrorS(err, "ironlb-speaker failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(kubeconfig string, cfg speaker.Config, qps float32, metricsAddr, healthAddr string, profiling bool) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = qps, int(2*qps)
	rc.UserAgent = "ironlb-speaker/" + cfg.Node
	// Services, EndpointSlices, Nodes and Leases in protobuf, as ironlb-ccm and
	// the Kubernetes components read them: decoding it makes a fraction of
	// JSON's garbage. The dynamic client (IPPools, BGPPeers) keeps to JSON.
	typed := rest.CopyConfig(rc)
	typed.ContentType = runtime.ContentTypeProtobuf
	typed.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	if cfg.Client, err = kubernetes.NewForConfig(typed); err != nil {
		return err
	}
	if cfg.Dynamic, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	cfg.Health = health.New(health.DefaultStuckAfter)
	s, err := speaker.New(cfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := speaker.RegisterMetrics(reg); err != nil {
		return err
	}
	if err := s.RegisterBFDMetrics(reg); err != nil {
		return err
	}
	metrics := map[string]http.Handler{"/metrics": promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	if profiling {
		metrics["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
		metrics["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
	}
	if err := serve("metrics", metricsAddr, metrics); err != nil {
		return err
	}
	if err := serve("health", healthAddr, cfg.Health.Handlers()); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	began := time.Now()
	err = s.Run(ctx)
	klog.InfoS("ironlb-speaker stopped", "node", cfg.Node, "ran", time.Since(began).Round(time.Second))
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serve(what, addr string, handlers map[string]http.Handler) error {
	if addr == "" || addr == "0" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for %s on %s: %w", what, addr, err)
	}
	mux := http.NewServeMux()
	for path, h := range handlers {
		mux.Handle(path, h)
	}
	klog.InfoS("Serving", "what", what, "address", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
