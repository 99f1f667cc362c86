package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/internal/ociimage"
	"github.com/ironlb/ironlb/internal/testenv"
)

// Real nodes (Config.Kubelet). Each full node runs, in its own network
// namespace, a containerd (Debian's, with runc) and a kubelet built from the
// pinned Kubernetes, each with its own root directory, state, socket and
// cgroup root under the lab's directory, so that labs side by side share
// nothing. Pods get addresses from the node's pod range through the CNI
// bridge plugin; the scheduler and kube-controller-manager run in the root
// namespace. Images come from files, not a registry: ironlb's from
// hack/images (the references deploy/ names), the sandbox (pause) and echo
// images built here the same way, imported with ctr.
const (
	// PauseImage is every pod's sandbox image.
	PauseImage = "lab.ironlb.io/pause:1"
	// EchoImage runs the echo backend (e2e/cmd/echo) as a pod.
	EchoImage = "lab.ironlb.io/echo:1"

	schedulerUser = "system:kube-scheduler" // bound to its ClusterRoles by bootstrap RBAC
)

// nodeUser is node n's kubelet identity, as the Node authorizer expects it.
func (l *Lab) nodeUser(n int) string { return "system:node:" + l.NodeName(n) }

// nodeDir holds node n's containerd and kubelet: configurations, roots,
// state and sockets.
func (l *Lab) nodeDir(n int) string { return filepath.Join(l.dir, "nodes", l.NodeName(n)) }

// containerdSocket is node n's CRI endpoint.
func (l *Lab) containerdSocket(n int) string { return filepath.Join(l.nodeDir(n), "containerd.sock") }

// CgroupRoot is node n's kubelet's cgroup root: its pods' cgroups are below it
// in every hierarchy.
func (p Plan) CgroupRoot(n int) string { return "/" + p.NodeNS(n) }

// podRange is the part of node n's pod range that CNI hands to pods: the
// upper half of the IPv4 /28 (gateway .7 of it, pods .8 to .14) and of the
// IPv6 range. The lower half stays free for the process endpoints
// (AddEndpoint), which take PodAddrs(n, 1..6) on a real node.
type podRange struct {
	Subnet, Gateway, First, Last netip.Addr
	Bits                         int
}

func (p Plan) podRanges(n int) []podRange {
	cidrs := p.NodePodCIDRs(n)
	v4 := cidrs[0].Addr().As4()
	at4 := func(i int) netip.Addr { b := v4; b[3] += byte(i); return netip.AddrFrom4(b) }
	v6 := cidrs[1].Addr().As16()
	at6 := func(i int) netip.Addr { b := v6; b[14], b[15] = byte(i>>8), byte(i); return netip.AddrFrom16(b) }
	return []podRange{
		{Subnet: cidrs[0].Addr(), Bits: cidrs[0].Bits(), Gateway: at4(cniGateway), First: at4(cniGateway + 1), Last: at4(14)},
		{Subnet: cidrs[1].Addr(), Bits: cidrs[1].Bits(), Gateway: at6(cniGateway), First: at6(cniGateway + 1), Last: at6(0xff)},
	}
}

// cniGateway is the host number of a node's bridge in its pod range.
const cniGateway = 7

// cniConfig is node n's CNI network: a bridge with the node as gateway and
// host-local addresses kept under the node's directory.
func (l *Lab) cniConfig(n int) string {
	var ranges []string
	for _, r := range l.podRanges(n) {
		ranges = append(ranges, fmt.Sprintf(`[{"subnet": %q, "gateway": %q, "rangeStart": %q, "rangeEnd": %q}]`,
			netip.PrefixFrom(r.Subnet, r.Bits), r.Gateway, r.First, r.Last))
	}
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": %q,
  "plugins": [{
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": %q,
      "ranges": [%s],
      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    }
  }]
}
`, l.NodeNS(n), filepath.Join(l.nodeDir(n), "ipam"), strings.Join(ranges, ", "))
}

// containerdConfig is node n's containerd configuration. restrict_oom_score_adj:
// without CAP_SYS_RESOURCE (a container host) runc cannot lower a
// sandbox's OOM score below its own, and every sandbox fails. The native
// snapshotter works on any file system the lab directory is on.
func (l *Lab) containerdConfig(n int) string {
	d := l.nodeDir(n)
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"),
		l.containerdSocket(n), l.containerdSocket(n)+".ttrpc", filepath.Join(d, "containerd", "opt"),
		PauseImage, filepath.Join(d, "containerd", "runc"), filepath.Join(d, "cni"))
}

// kubeletConfig is node n's KubeletConfiguration. failCgroupV1: the lab's
// hosts may have only cgroup v1. Eviction and image garbage collection are
// off: the lab's disk and memory are the machine's, shared with everything
// else, and no image can be pulled again.
func (l *Lab) kubeletConfig(n int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: %q
address: %q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: %q
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: ""
evictionHard:
  memory.available: "0%%"
  nodefs.available: "0%%"
  imagefs.available: "0%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
podLogsDir: %q
`, l.CgroupRoot(n), l.NodeAddrs(n)[0], "unix://"+l.containerdSocket(n), filepath.Join(l.nodeDir(n), "logs"))
}

// enter runs bin in namespace ns through nsenter, which (unlike ip netns
// exec) keeps the root mount namespace and its /sys: the kubelet and
// containerd must see the machine's cgroups and share their mounts.
func enter(ns, bin string, args ...string) (string, []string) {
	return "nsenter", append([]string{"--net=/run/netns/" + ns, "--", bin}, args...)
}

// startKubeletNode runs node n's containerd, imports the lab's images,
// writes its CNI network and runs its kubelet, which registers the Node
// that createKubeletNode made.
func (l *Lab) startKubeletNode(ctx context.Context, n int, images []string) error {
	d := l.nodeDir(n)
	for _, sub := range []string{"cni", "ipam", "kubelet", "pki", "containerd", "logs"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd.toml":     l.containerdConfig(n),
		"cni/10-lab.conflist": l.cniConfig(n),
		"kubelet.yaml":        l.kubeletConfig(n),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	bin, args := enter(l.NodeNS(n), "containerd", "--config", filepath.Join(d, "containerd.toml"))
	if _, err := l.start("containerd@"+l.NodeName(n), "", bin, args...); err != nil {
		return err
	}
	if err := l.waitContainerd(ctx, n); err != nil {
		return err
	}
	if err := l.importImages(ctx, n, images); err != nil {
		return err
	}
	if err := makeCgroupRoot(l.CgroupRoot(n)); err != nil {
		return fmt.Errorf("node %s: %w", l.NodeName(n), err)
	}
	a := l.NodeAddrs(n)
	bin, args = enter(l.NodeNS(n), l.bins.Kubelet,
		"--config="+filepath.Join(d, "kubelet.yaml"),
		"--kubeconfig="+l.kubeconfigFor(l.nodeUser(n)),
		"--root-dir="+filepath.Join(d, "kubelet"),
		"--cert-dir="+filepath.Join(d, "pki"),
		"--hostname-override="+l.NodeName(n),
		"--node-ip="+a[0].String()+","+a[1].String(),
		"--v=1",
	)
	_, err := l.start("kubelet@"+l.NodeName(n), "", bin, args...)
	return err
}

// waitContainerd waits until node n's containerd answers on its socket.
func (l *Lab) waitContainerd(ctx context.Context, n int) error {
	name := "containerd@" + l.NodeName(n)
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if !l.Alive(name) {
			return false, fmt.Errorf("%s exited: %s", name, l.Tail(name, 20))
		}
		_, last = run(ctx, "ctr", "--address", l.containerdSocket(n), "version")
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%s does not answer: %w (last: %v)", name, err, last)
	}
	return nil
}

// createKubeletNode creates node n's Node object before its kubelet starts,
// with the pod ranges that the lab's routes and CNI use (no controller
// allocates them here). The kubelet registers into it and reports its status.
func (l *Lab) createKubeletNode(ctx context.Context, n int) error {
	var podCIDRs []string
	for _, p := range l.NodePodCIDRs(n) {
		podCIDRs = append(podCIDRs, p.String())
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: l.NodeName(n), Labels: map[string]string{"kubernetes.io/hostname": l.NodeName(n)}},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDRs[0], PodCIDRs: podCIDRs},
	}
	if _, err := l.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Node %s: %w", node.Name, err)
	}
	return nil
}

// WaitNodeReady waits until node n's kubelet reports it Ready.
func (l *Lab) WaitNodeReady(ctx context.Context, n int) error {
	name := l.NodeName(n)
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		if !l.Alive("kubelet@" + name) {
			return false, fmt.Errorf("kubelet@%s exited: %s", name, l.Tail("kubelet@"+name, 20))
		}
		node, err := l.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				last = fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		last = "no Ready condition yet"
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w (last: %s; kubelet: %s)", name, err, last, l.Tail("kubelet@"+name, 10))
	}
	return nil
}

// writeKubernetesEndpoints points the kubernetes Service (what in-cluster
// clients dial) at the API server: the lab's API server runs without its
// endpoint reconciler, so that several labs on one machine do not fight over it.
func (l *Lab) writeKubernetesEndpoints(ctx context.Context, apiURL string) error {
	u, err := url.Parse(apiURL)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return fmt.Errorf("API server URL %s: no port", apiURL)
	}
	name, proto, ready, port := "https", corev1.ProtocolTCP, true, int32(p)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "kubernetes",
			Namespace: metav1.NamespaceDefault,
			Labels:    map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: sliceManager},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{l.APIAddrs()[0].String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	if _, err := l.Client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubernetes EndpointSlice: %w", err)
	}
	return nil
}

// startScheduler runs kube-scheduler in the root namespace.
func (l *Lab) startScheduler() error {
	_, err := l.start("kube-scheduler", "", l.bins.KubeScheduler,
		"--kubeconfig="+l.kubeconfigFor(schedulerUser),
		"--secure-port=0",
		"--leader-elect=false",
	)
	return err
}

// buildImages writes the images the lab's nodes import: ironlb's two (from
// hack/images, tagged as deploy/ names them), and the pause and echo images.
func (l *Lab) buildImages(ctx context.Context) ([]string, error) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	_, version, err := deployImageTag()
	if err != nil {
		return nil, err
	}
	images, err := l.buildIronlbImages(ctx, version)
	if err != nil {
		return nil, err
	}
	for _, img := range []struct{ pkg, ref string }{{"./cmd/pause", PauseImage}, {"./cmd/echo", EchoImage}} {
		path, err := buildLabImage(ctx, filepath.Join(repo, "e2e"), img.pkg, img.ref, filepath.Join(l.dir, "images"))
		if err != nil {
			return nil, err
		}
		images = append(images, path)
	}
	return images, nil
}

// buildIronlbImages builds ironlb's two images from this tree, tagged with
// version in the registry deploy/ names, as make images does.
func (l *Lab) buildIronlbImages(ctx context.Context, version string) ([]string, error) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	registry, _, err := deployImageTag()
	if err != nil {
		return nil, err
	}
	out := filepath.Join(l.dir, "images", version)
	cmd := exec.CommandContext(ctx, "go", "run", "./hack/images", "-out", out, "-version", version, "-registry", registry)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build ironlb's images %s: %w\n%s", version, err, b)
	}
	return []string{filepath.Join(out, "ironlb-ccm.tar"), filepath.Join(out, "ironlb-speaker.tar")}, nil
}

// LoadImages builds ironlb's images of another version (an upgrade's) and
// imports them into every node, as `kind load` does.
func (l *Lab) LoadImages(ctx context.Context, version string) error {
	images, err := l.buildIronlbImages(ctx, version)
	if err != nil {
		return err
	}
	for n := 1; n <= l.Nodes; n++ {
		if err := l.importImages(ctx, n, images); err != nil {
			return err
		}
	}
	return nil
}

// importImages imports image archives into node n's containerd, unpacked.
func (l *Lab) importImages(ctx context.Context, n int, images []string) error {
	for _, img := range images {
		if _, err := run(ctx, "ctr", "--address", l.containerdSocket(n), "--namespace", "k8s.io", "images", "import", "--snapshotter", "native", img); err != nil {
			return fmt.Errorf("node %s: import %s: %w", l.NodeName(n), filepath.Base(img), err)
		}
	}
	return nil
}

// DeployYAML is deploy/default rendered (as kubectl apply -k renders it)
// with ironlb's images at version, as one YAML stream: what a user applies
// to upgrade.
func DeployYAML(version string) ([]byte, error) {
	registry, _, err := deployImageTag()
	if err != nil {
		return nil, err
	}
	objs, err := Render(DeployDir)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, o := range objs {
		for _, path := range [][]string{{"spec", "template", "spec", "containers"}, {"spec", "template", "spec", "initContainers"}} {
			cs, found, _ := unstructured.NestedSlice(o.Object, path...)
			if !found {
				continue
			}
			for _, c := range cs {
				m, _ := c.(map[string]any)
				if image, _ := m["image"].(string); strings.HasPrefix(image, registry+"/") {
					repo, _, _ := strings.Cut(image, ":")
					m["image"] = repo + ":" + version
				}
			}
			if err := unstructured.SetNestedSlice(o.Object, cs, path...); err != nil {
				return nil, err
			}
		}
		b, err := o.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out = append(append(append(out, "---\n"...), b...), '\n')
	}
	return out, nil
}

// buildLabImage builds the static main package pkg of the e2e module and
// writes it as an image tagged ref into dir, as hack/images does ironlb's.
func buildLabImage(ctx context.Context, e2eDir, pkg, ref, dir string) (string, error) {
	name := filepath.Base(pkg)
	bin := filepath.Join(dir, "bin", name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = e2eDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	path := filepath.Join(dir, name+".tar")
	_, err := ociimage.Write(path, ociimage.Spec{
		Name:        name,
		Reference:   ref,
		Version:     "lab",
		Revision:    "lab",
		Description: "ironlb lab " + name,
		Binaries:    []ociimage.Binary{{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, Path: bin}},
	})
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	return path, nil
}

// deployImageTag is the registry and tag of ironlb's images in
// deploy/default (e.g. ghcr.io/ironlb and v0.1.0), so that the images the
// lab builds are the ones the manifests name.
func deployImageTag() (registry, version string, err error) {
	objs, err := deployObjects()
	if err != nil {
		return "", "", err
	}
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" || o.GetName() != SpeakerAccount {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			m, _ := c.(map[string]any)
			image, _ := m["image"].(string)
			repo, tag, ok := strings.Cut(image, ":")
			if m["name"] == SpeakerAccount && ok {
				return strings.TrimSuffix(repo, "/"+SpeakerAccount), tag, nil
			}
		}
	}
	return "", "", fmt.Errorf("%s: no DaemonSet %s with a tagged image", DeployDir, SpeakerAccount)
}

// removeKubeletNodes removes what real nodes leave beyond their recorded
// processes (stopped before): the pods' processes, found by the nodes' cgroups;
// containerd's shims, found by the socket they serve; the mounts under the
// lab's directory and the pods' network namespaces; the cgroups. It runs
// for every lab, also one of process nodes, and finds nothing there.
func removeKubeletNodes(dir string, p Plan) error {
	var errs []string
	podNets := map[uint64]bool{}
	for n := 1; n <= p.Nodes; n++ {
		for _, pid := range cgroupProcs(p.CgroupRoot(n)) {
			if ino, ok := netnsInode(pid); ok {
				podNets[ino] = true
			}
			if t, ok := startTicks(pid); ok {
				Proc{Name: "pod process", Pid: pid, StartTicks: t}.killOne()
			}
		}
	}
	for _, sh := range shimsServing(dir + "/") {
		if t, ok := startTicks(sh.pid); ok {
			Proc{Name: "containerd shim", Pid: sh.pid, StartTicks: t}.killOne()
		}
		// What a shim that exits by itself removes: its socket, and the
		// loopback plugin's cache of its pod.
		sum := sha256.Sum256([]byte(filepath.Join(sh.address, sh.namespace, sh.id)))
		os.Remove(fmt.Sprintf("/run/containerd/s/%x", sum))
		os.Remove("/var/lib/cni/results/cni-loopback-" + sh.id + "-lo")
	}
	for _, m := range mountsUnder(dir+"/", podNets) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Sprintf("unmount %s: %v", m, err))
		}
		if strings.HasPrefix(m, "/run/netns/") {
			os.Remove(m)
		}
	}
	for n := 1; n <= p.Nodes; n++ {
		if err := removeCgroups(p.CgroupRoot(n)); err != nil {
			errs = append(errs, err.Error())
		}
		// host-local and libcni keep a cache per network on the machine.
		cached, _ := filepath.Glob("/var/lib/cni/results/" + p.NodeNS(n) + "-*")
		for _, c := range cached {
			os.Remove(c)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove real nodes: %s", strings.Join(errs, "; "))
	}
	return nil
}

// cgroupHierarchies are the mounted cgroup hierarchies (v1 controllers, or
// the one v2 tree).
func cgroupHierarchies() []string {
	out, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var dirs []string
	for _, line := range strings.Split(string(out), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && (g[0] == "cgroup" || g[0] == "cgroup2") {
			dirs = append(dirs, f[4])
		}
	}
	return dirs
}

// cgroupDirs lists the cgroup root and every cgroup below it, in every
// hierarchy, each parent before its children.
func cgroupDirs(root string) []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	return dirs
}

// cgroupProcs lists every process in the cgroup root and below it, in any hierarchy.
func cgroupProcs(root string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, dir := range cgroupDirs(root) {
		data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// makeCgroupRoot creates the cgroup root in every hierarchy: the kubelet
// creates its pods' cgroups below it but wants it there. A new cpuset cgroup
// has no CPUs or memory nodes until given its parent's.
func makeCgroupRoot(root string) error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// removeCgroups removes the cgroup root and everything below it, deepest first.
func removeCgroups(root string) error {
	var errs []string
	dirs := cgroupDirs(root)
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Sprintf("rmdir %s: %v", dirs[i], err))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// netnsInode is the inode of process pid's network namespace.
func netnsInode(pid int) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// shim is a containerd shim process: the pod sandbox it serves, for the
// containerd at address.
type shim struct {
	pid                    int
	id, namespace, address string
}

// shimsServing lists the containerd shims whose containerd's socket is under dir.
func shimsServing(dir string) []shim {
	entries, _ := os.ReadDir("/proc")
	var shims []shim
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		sh := shim{pid: pid}
		for i, a := range args[:len(args)-1] {
			switch a {
			case "-address":
				sh.address = args[i+1]
			case "-id":
				sh.id = args[i+1]
			case "-namespace":
				sh.namespace = args[i+1]
			}
		}
		if strings.HasPrefix(sh.address, dir) {
			shims = append(shims, sh)
		}
	}
	return shims
}

// removeKubeletDebris removes, once no lab is left, what every kubelet on
// the machine shares: the device plugins' directory (a fixed path) with
// the files a kubelet leaves there, and containerd's shim socket directory,
// each only if nothing else is there: a machine that is a Kubernetes node
// itself keeps its kubelet's files.
func removeKubeletDebris() {
	if entries, err := os.ReadDir("/var/lib/kubelet"); err == nil && len(entries) == 1 && entries[0].Name() == "device-plugins" {
		for _, f := range []string{"kubelet.sock", "kubelet_internal_checkpoint"} {
			os.Remove(filepath.Join("/var/lib/kubelet/device-plugins", f))
		}
	}
	for _, d := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/run/containerd/s", "/run/containerd"} {
		syscall.Rmdir(d) // only if empty
	}
}

// mountsUnder lists the mount points under dir and the network namespaces
// mounted in /run/netns whose inode is in nets, deepest first.
func mountsUnder(dir string, nets map[uint64]bool) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		m := f[4]
		if strings.HasPrefix(m, dir) {
			mounts = append(mounts, m)
			continue
		}
		if strings.HasPrefix(m, "/run/netns/cni-") {
			var st syscall.Stat_t
			if syscall.Stat(m, &st) == nil && nets[st.Ino] {
				mounts = append(mounts, m)
			}
		}
	}
	slices.SortFunc(mounts, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(mounts)
}

// routePodsFromRoot routes the pod ranges of the nodes from the root
// namespace, where the API server runs: pods reach it through the
// kubernetes Service without masquerading, and it answers them directly.
func routePodsFromRoot(ctx context.Context, p Plan) error {
	var lines []string
	for n := 1; n <= p.Nodes; n++ {
		for i, pc := range p.NodePodCIDRs(n) {
			lines = append(lines, fmt.Sprintf("route replace %s via %s dev %s", pc, p.NodeAddrs(n)[i], p.RootLink()))
		}
	}
	return ipBatch(ctx, "", lines...)
}

// EchoDeployment creates a Deployment of replicas echo pods (EchoImage)
// labelled app=<name> in namespace ns, serving HTTP on port and answering
// with their pod and node names; a Service selects them by that label. The
// pods are Ready once they serve.
func (l *Lab) EchoDeployment(ctx context.Context, ns, name string, replicas, port int32) error {
	labels := map[string]string{"app": name}
	fieldEnv := func(env, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: env, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					// One per node while nodes are free, as a real backend is spread.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name:            "echo",
						Image:           EchoImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"--name=$(POD_NAME)", "--node=$(NODE_NAME)", "--listen=::", "--tcp=" + strconv.Itoa(int(port))},
						Env:             []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("NODE_NAME", "spec.nodeName")},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: port}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(port)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := l.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Deployment %s/%s: %w", ns, name, err)
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := l.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d of %d pods ready", got.Status.ReadyReplicas, replicas)
		return got.Status.ReadyReplicas == replicas, nil
	})
	if err != nil {
		return fmt.Errorf("Deployment %s/%s: %s: %w", ns, name, last, err)
	}
	return nil
}
