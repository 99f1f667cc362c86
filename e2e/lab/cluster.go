package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ironlb/ironlb/internal/testenv"
	"github.com/ironlb/ironlb/internal/upstream"
)

const (
	kubeProxyUser = "system:kube-proxy" // bound to system:node-proxier by bootstrap RBAC
	kcmUser       = "system:kube-controller-manager"
)

// buildBinaries builds or finds the upstream binaries (cached by version)
// and builds ironlb-ccm and the echo backend, all at once.
func (l *Lab) buildBinaries(ctx context.Context) error {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(l.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	l.bins.CCM, l.bins.Speaker, l.bins.Echo = filepath.Join(bin, "ironlb-ccm"), filepath.Join(bin, "ironlb-speaker"), filepath.Join(bin, "echo")
	errs := make(chan error, 2)
	go func() {
		want := slices.Clone(upstream.Lab)
		if l.cfg.Kubelet {
			want = append(want, upstream.Nodes...)
		}
		kubectl := ""
		if l.cfg.Kubectl {
			if kubectl = testenv.Kubectl(ctx); kubectl == "" {
				want = append(want, "kubectl")
			}
		}
		var err error
		if l.bins.Bins, err = testenv.Binaries(ctx, want...); err != nil {
			errs <- err
			return
		}
		if note := l.bins.Reused(want); note != "" {
			l.progress("lab %s: %s", l.cfg.Name, note)
		}
		if l.cfg.Kubectl {
			if kubectl == "" {
				kubectl = l.bins.Kubectl
			}
			err = os.Symlink(kubectl, filepath.Join(bin, "kubectl"))
		}
		errs <- err
	}()
	// With a cold Go build cache these take minutes as well: say so.
	began := time.Now()
	l.progress("lab %s: building ironlb-ccm, ironlb-speaker and the echo backend (seconds, or minutes with a cold Go build cache)", l.cfg.Name)
	products := make(chan error, 2)
	go func() { products <- testenv.GoBuildInto(ctx, repo, bin, "./cmd/ironlb-ccm", "./cmd/ironlb-speaker") }()
	go func() { products <- testenv.GoBuild(ctx, filepath.Join(repo, "e2e"), "./cmd/echo", l.bins.Echo) }()
	go func() {
		var err error
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for left := 2; left > 0; {
			select {
			case e := <-products:
				left--
				if e != nil && err == nil {
					err = e
				}
			case <-tick.C:
				l.progress("lab %s: still building ironlb-ccm, ironlb-speaker and echo (%s)", l.cfg.Name, time.Since(began).Round(time.Second))
			}
		}
		if err == nil {
			l.progress("lab %s: ironlb-ccm, ironlb-speaker and echo built in %s", l.cfg.Name, time.Since(began).Round(100*time.Millisecond))
		}
		errs <- err
	}()
	for range 2 {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil || !l.cfg.Kubelet {
		return err
	}
	began = time.Now()
	if l.images, err = l.buildImages(ctx); err != nil {
		return err
	}
	l.progress("lab %s: images of ironlb-ccm, ironlb-speaker, pause and echo built in %s", l.cfg.Name, time.Since(began).Round(100*time.Millisecond))
	return nil
}

// startControlPlane runs etcd and kube-apiserver in the root namespace on
// the lab's API address, installs ironlb's CRDs, namespace and RBAC from
// deploy/ (see installDeploy) and starts
// kube-controller-manager (namespace deletion, garbage collection, service
// account tokens).
func (l *Lab) startControlPlane(ctx context.Context) error {
	opts := []testenv.Option{
		testenv.WithBinaries(l.bins.Bins),
		testenv.WithAddress(l.APIAddrs()[0]),
		testenv.WithServiceCIDRs(l.ServiceCIDRs()...),
		testenv.WithUser(kubeProxyUser),
		testenv.WithUser(kcmUser),
		testenv.WithAPIServerArgs(l.cfg.APIServerArgs...),
	}
	if l.cfg.Kubelet {
		opts = append(opts, testenv.WithUser(schedulerUser))
		for n := 1; n <= l.Nodes; n++ {
			opts = append(opts, testenv.WithUser(l.nodeUser(n), "system:nodes"))
		}
		// Kubelets are authorized as nodes; kubectl logs and exec reach
		// them at their InternalIP (their names resolve nowhere).
		opts = append(opts, testenv.WithAPIServerArgs("--authorization-mode=Node,RBAC", "--kubelet-preferred-address-types=InternalIP"))
	}
	if !l.cfg.Attached {
		opts = append(opts, testenv.WithDetached())
	}
	api, err := testenv.Start(ctx, filepath.Join(l.dir, "control-plane"), opts...)
	for _, p := range apiProcs(api) {
		if rerr := l.record(p); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(l.dir, "kubeconfig")
	data, err := os.ReadFile(api.KubeconfigPath())
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return err
	}
	users := []string{kubeProxyUser, kcmUser}
	if l.cfg.Kubelet {
		users = append(users, schedulerUser)
		for n := 1; n <= l.Nodes; n++ {
			users = append(users, l.nodeUser(n))
		}
	}
	for _, u := range users {
		if err := api.KubeconfigFor(u, l.kubeconfigFor(u)); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.state.APIServer = api.URL()
	err = writeState(l.dir, l.state)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.connect(kubeconfig); err != nil {
		return err
	}
	if err := l.installDeploy(ctx); err != nil {
		return err
	}
	kcm := l.kubeconfigFor(kcmUser)
	// Without kubelets no one renews node leases: node lifecycle would mark
	// every node NotReady after 40 s. With them it must run: it lifts the
	// not-ready taint that a kubelet registers its Node with.
	// The lab's API server certificate is self-signed, not a CA, so it
	// cannot be published as a ClusterTrustBundle.
	controllers := "*,-node-lifecycle-controller,-kube-apiserver-serving-clustertrustbundle-publisher-controller"
	if l.cfg.Kubelet {
		controllers = "*,-kube-apiserver-serving-clustertrustbundle-publisher-controller"
	}
	_, err = l.start("kube-controller-manager", "", l.bins.KubeControllerManager,
		"--kubeconfig="+kcm,
		// No serving port: nothing here scrapes it, and several labs share
		// the root namespace.
		"--secure-port=0",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+api.ServiceAccountKeyPath(),
		"--root-ca-file="+api.CAPath(),
		"--controllers="+controllers,
		"--leader-elect=false",
		"--cluster-name="+l.Prefix(),
	)
	if err != nil || !l.cfg.Kubelet {
		return err
	}
	if err := l.writeKubernetesEndpoints(ctx, api.URL()); err != nil {
		return err
	}
	return l.startScheduler()
}

// apiProcs turns testenv's etcd and kube-apiserver into records; they are
// stopped by the lab like the rest but not restarted by it.
func apiProcs(api *testenv.APIServer) []Proc {
	if api == nil {
		return nil
	}
	var procs []Proc
	for _, p := range api.Processes() {
		rec := Proc{Name: p.Name(), Pid: p.Pid(), Log: p.LogPath()}
		rec.StartTicks, _ = startTicks(rec.Pid)
		procs = append(procs, rec)
	}
	return procs
}

func (l *Lab) kubeconfigFor(user string) string {
	return filepath.Join(l.dir, strings.TrimPrefix(strings.ReplaceAll(user, ":", "-"), "system-")+".kubeconfig")
}

// startNodes creates the Node objects, Ready and with both addresses as a
// kubelet would report them, and runs kube-proxy in each node's namespace.
func (l *Lab) startNodes(ctx context.Context) error {
	if l.cfg.Kubelet {
		if err := routePodsFromRoot(ctx, l.Plan); err != nil {
			return err
		}
	}
	for n := 1; n <= l.Nodes; n++ {
		if l.cfg.Kubelet {
			if err := l.createKubeletNode(ctx, n); err != nil {
				return err
			}
			if err := l.startKubeletNode(ctx, n, l.images); err != nil {
				return err
			}
		} else if err := l.createNode(ctx, n); err != nil {
			return err
		}
		kubeconfig := filepath.Join(l.dir, fmt.Sprintf("kube-proxy-%s.kubeconfig", l.NodeName(n)))
		data, err := os.ReadFile(l.kubeconfigFor(kubeProxyUser))
		if err != nil {
			return err
		}
		if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
			return err
		}
		cidrs := l.PodCIDRs()
		if _, err := l.start("kube-proxy@"+l.NodeName(n), l.NodeNS(n), l.bins.KubeProxy,
			"--kubeconfig="+kubeconfig,
			"--hostname-override="+l.NodeName(n),
			"--proxy-mode=nftables",
			"--cluster-cidr="+cidrs[0].String()+","+cidrs[1].String(),
			// Leave the kernel's conntrack table size alone: it is not per
			// namespace.
			"--conntrack-max-per-core=0",
		); err != nil {
			return err
		}
	}
	for n := 1; n <= l.Nodes; n++ {
		if l.cfg.Kubelet {
			if err := l.WaitNodeReady(ctx, n); err != nil {
				return err
			}
		}
		if err := l.WaitKubeProxy(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// WaitKubeProxy waits until kube-proxy on node n reports healthy, which it
// does once it has programmed the Services it has seen.
func (l *Lab) WaitKubeProxy(ctx context.Context, n int) error {
	url := "http://" + net.JoinHostPort(l.NodeAddrs(n)[0].String(), "10256") + "/healthz"
	hc := &http.Client{Timeout: time.Second}
	name := "kube-proxy@" + l.NodeName(n)
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if !l.Alive(name) {
			return false, fmt.Errorf("%s exited: %s", name, l.Tail(name, 20))
		}
		resp, err := hc.Get(url)
		if err != nil {
			last = err
			return false, nil
		}
		resp.Body.Close()
		last = fmt.Errorf("GET %s: %s", url, resp.Status)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s not healthy: %w (last: %v)", name, err, last)
	}
	return nil
}

func (l *Lab) createNode(ctx context.Context, n int) error {
	name := l.NodeName(n)
	var podCIDRs []string
	for _, p := range l.NodePodCIDRs(n) {
		podCIDRs = append(podCIDRs, p.String())
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": runtime.GOARCH},
		},
		Spec: corev1.NodeSpec{PodCIDRs: podCIDRs},
	}
	if len(podCIDRs) > 0 {
		node.Spec.PodCIDR = podCIDRs[0]
	}
	created, err := l.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Node %s: %w", name, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "lab node", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated", Message: "lab host-gateway routes", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		NodeInfo: corev1.NodeSystemInfo{
			OperatingSystem: "linux",
			Architecture:    runtime.GOARCH,
			OSImage:         "ironlb lab (network namespace)",
			KernelVersion:   kernelVersion(),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: l.NodeAddrs(n)[0].String()},
			{Type: corev1.NodeInternalIP, Address: l.NodeAddrs(n)[1].String()},
			{Type: corev1.NodeHostName, Address: name},
		},
	}
	status := created.Status
	// A controller may change the new Node first (labels, taints): then
	// the status goes onto its latest version.
	for try := 0; ; try++ {
		_, err = l.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) || try == 4 {
			break
		}
		if created, err = l.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
			break
		}
		created.Status = status
	}
	if err != nil {
		return fmt.Errorf("set Node %s Ready: %w", name, err)
	}
	return nil
}

// StartCCM runs ironlb-ccm in the root namespace (it only talks to the API
// server) as deploy/ installs it: the Deployment's flags, the ServiceAccount
// ironlb-ccm and its RBAC. Then short leader-election timers so that a
// restart takes over within seconds. Its metrics and health endpoints listen
// on the lab's API address, ports 10290 and 10291.
func (l *Lab) StartCCM(ctx context.Context, args ...string) error {
	addr := l.APIAddrs()[0].String()
	all, err := deployArgs("Deployment", CCMAccount)
	if err != nil {
		return err
	}
	all = append(all,
		"--kubeconfig="+l.AccountKubeconfig(CCMAccount),
		"--cloud-provider=ironlb",
		"--secure-port=0",
		"--metrics-bind-address="+net.JoinHostPort(addr, "10290"),
		"--health-probe-bind-address="+net.JoinHostPort(addr, "10291"),
		"--leader-elect-lease-duration=3s",
		"--leader-elect-renew-deadline=2s",
		"--leader-elect-retry-period=500ms",
		"--v=2",
	)
	all = append(all, args...)
	if _, err := l.start("ironlb-ccm", "", l.bins.CCM, all...); err != nil {
		return err
	}
	return l.waitHealthy(ctx, "ironlb-ccm", "http://"+net.JoinHostPort(addr, "10291")+"/healthz")
}

// SpeakerName is the process name of node n's ironlb-speaker.
func (l *Lab) SpeakerName(n int) string { return "ironlb-speaker@" + l.NodeName(n) }

// StartSpeaker runs ironlb-speaker in node n's namespace, as the DaemonSet
// of deploy/ would with host networking: its flags, the ServiceAccount
// ironlb-speaker and its RBAC. Its metrics and health endpoints listen on
// the node's address, ports 10292 and 10293; heartbeats use UDP 7947.
func (l *Lab) StartSpeaker(ctx context.Context, n int, args ...string) error {
	addr := l.NodeAddrs(n)[0].String()
	all, err := deployArgs("DaemonSet", SpeakerAccount)
	if err != nil {
		return err
	}
	all = append(all,
		"--kubeconfig="+l.AccountKubeconfig(SpeakerAccount),
		"--node-name="+l.NodeName(n),
		"--namespace="+Namespace,
		"--metrics-bind-address="+net.JoinHostPort(addr, "10292"),
		"--health-probe-bind-address="+net.JoinHostPort(addr, "10293"),
		"--v=2",
	)
	all = append(all, args...)
	name := l.SpeakerName(n)
	if _, err := l.start(name, l.NodeNS(n), l.bins.speakerPath(l.dir), all...); err != nil {
		return err
	}
	return l.waitHealthy(ctx, name, "http://"+net.JoinHostPort(addr, "10293")+"/healthz")
}

// SpeakerMetrics is node n's speaker's /metrics text.
func (l *Lab) SpeakerMetrics(n int) (string, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + net.JoinHostPort(l.NodeAddrs(n)[0].String(), "10292") + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// WaitSpeakersConverged waits until every running speaker that takes part
// in the heartbeats counts every other member alive (its
// ironlb_speaker_peers_alive and ironlb_speaker_members metrics), and answers
// from the heartbeats (ironlb_speaker_membership_mode).
func (l *Lab) WaitSpeakersConverged(ctx context.Context) error {
	var running []int
	for n := 1; n <= l.AllNodes(); n++ {
		// On real nodes the DaemonSet runs a speaker pod on each.
		if l.Alive(l.SpeakerName(n)) || l.state.Kubelet && n <= l.Nodes {
			running = append(running, n)
		}
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, n := range running {
			m, err := l.SpeakerMetrics(n)
			members, _ := MetricValue(m, "ironlb_speaker_members")
			alive, _ := MetricValue(m, "ironlb_speaker_peers_alive")
			mode, _ := MetricValue(m, `ironlb_speaker_membership_mode{mode="heartbeats"}`)
			if err != nil || members > 0 && (alive != members-1 || mode != 1) {
				last = fmt.Sprintf("%s: %v alive of %v members, heartbeats mode %v (%v)", l.SpeakerName(n), alive, members, mode, err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("speakers do not hear each other: %s: %w", last, err)
	}
	return nil
}

// MetricValue is the value of the sample named name (with its labels, as
// exposed) in a /metrics text.
func MetricValue(metrics, name string) (float64, bool) {
	for _, line := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitHealthy waits until url answers 200, failing at once if the process exits.
func (l *Lab) waitHealthy(ctx context.Context, name, url string) error {
	hc := &http.Client{Timeout: time.Second}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if !l.Alive(name) {
			return false, fmt.Errorf("%s exited: %s", name, l.Tail(name, 20))
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Tail returns the last n lines of a process's log.
func (l *Lab) Tail(name string, n int) string {
	p, ok := l.Proc(name)
	if !ok {
		return ""
	}
	data, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// hostPort joins an address and a port for a URL.
func hostPort(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }

func kernelVersion() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
