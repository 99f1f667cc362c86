// Command bench measures ironlb-ccm and prints one table: the allocator's cost per allocation,
// and how many Services per second get their address on a real kube-apiserver, both for
// Services that exist before ironlb-ccm starts and for Services created while it runs, and
// ironlb-ccm's memory: its RSS and its live Go heap once every Service has its address.
//
//	go run ./test/bench [-sizes 1000,10000,20000] [-running=false] [-profiles DIR]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/testenv"
)

type row struct{ what, value, note string }

func main() {
	sizes := flag.String("sizes", "1000,10000,20000", "numbers of Services to measure on the API server")
	ccmArgs := flag.String("ccm-args", "", "extra ironlb-ccm flags, space separated (e.g. to try the stock defaults)")
	skipAlloc := flag.Bool("skip-allocator", false, "skip the allocator micro-benchmarks")
	running := flag.Bool("running", true, "also measure Services created while ironlb-ccm runs (false: only Services that exist before it starts)")
	profiles := flag.String("profiles", "", "directory to save ironlb-ccm's heap profile in after each run (heap-<n>-<existing|running>.pb.gz)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	root, err := testenv.RepoRoot()
	if err != nil {
		fail(err)
	}
	var rows []row
	if !*skipAlloc {
		r, err := allocatorRows(ctx, root)
		if err != nil {
			fail(err)
		}
		rows = append(rows, r...)
	}
	tmp, err := os.MkdirTemp("", "ironlb-bench-")
	if err != nil {
		fail(err)
	}
	defer func() {
		if os.Getenv("IRONLB_BENCH_KEEP") == "" {
			os.RemoveAll(tmp)
		}
	}()
	ccm := filepath.Join(tmp, "ironlb-ccm")
	if err := testenv.GoBuild(ctx, root, "./cmd/ironlb-ccm", ccm); err != nil {
		fail(err)
	}
	if *profiles != "" {
		if err := os.MkdirAll(*profiles, 0o755); err != nil {
			fail(err)
		}
	}
	modes := []bool{true}
	if *running {
		modes = append(modes, false)
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fail(err)
		}
		for _, preexisting := range modes {
			r, err := throughput(ctx, ccm, tmp, n, preexisting, strings.Fields(*ccmArgs), *profiles)
			if err != nil {
				printRows(rows) // what was measured before
				fail(err)
			}
			rows = append(rows, r...)
		}
	}
	printRows(rows)
}

func printRows(rows []row) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEASURE\tVALUE\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.what, r.value, r.note)
	}
	w.Flush()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

var benchLine = regexp.MustCompile(`^BenchmarkAllocate/(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) B/op\s+(\d+) allocs/op`)

// allocatorRows runs the allocator's Go benchmarks and keeps ns/op and allocs/op.
func allocatorRows(ctx context.Context, root string) ([]row, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "BenchmarkAllocate", "-benchmem", "-count", "1", "./provider/ipam/")
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("allocator benchmarks: %w\n%s", err, out)
	}
	var rows []row
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		rows = append(rows, row{"allocate+release " + m[1], m[3] + " ns/op, " + m[5] + " allocs/op", "allocator alone"})
	}
	return rows, nil
}

// throughput measures how long n Services take to get their address.
func throughput(ctx context.Context, ccmBin, tmp string, n int, preexisting bool, extra []string, profiles string) ([]row, error) {
	// 20,000 Services need more cluster IPs than the default range holds, and more node ports
	// than any range does: the Services do without node ports, as ironlb allows.
	api, err := testenv.Start(ctx, "", testenv.WithServiceCIDRs(netip.MustParsePrefix("172.31.0.0/17")))
	if err != nil {
		return nil, err
	}
	defer api.Stop()
	cfg := api.Config()
	client := kubernetes.NewForConfigOrDie(cfg)
	if err := testenv.InstallCRDs(ctx, cfg); err != nil {
		return nil, err
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "ironlb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": "bench"},
		"spec":     map[string]any{"addresses": []any{"172.31.128.0/17"}},
	}}
	if _, err := dynamic.NewForConfigOrDie(cfg).Resource(v1alpha1.IPPoolResource).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return nil, err
	}

	// Count Services with an address as the watch reports them.
	// Watch Services as a user would and note when each shows an address; for Services
	// created while ironlb-ccm runs, also how long after its creation.
	var (
		mu        sync.Mutex
		createdAt = map[string]time.Time{}
		latencies []time.Duration
		served    = map[string]bool{}
		allDone   = make(chan struct{})
	)
	check := func(obj any) {
		svc, ok := obj.(*v1.Service)
		if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if served[svc.Name] {
			return
		}
		served[svc.Name] = true
		if t, ok := createdAt[svc.Name]; ok {
			latencies = append(latencies, now.Sub(t))
		}
		if len(served) == n {
			close(allDone)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Services().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }})
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	cache.WaitForCacheSync(stop, inf.HasSynced)
	noteCreated := func(name string) {
		mu.Lock()
		createdAt[name] = time.Now()
		mu.Unlock()
	}

	// The metrics address, on a port of the kernel's choosing, serves the heap profile.
	args := append([]string{"--kubeconfig=" + api.KubeconfigPath(), "--secure-port=0",
		"--metrics-bind-address=127.0.0.1:0", "--metrics-profiling", "--health-probe-bind-address=0"}, extra...)
	logPath := filepath.Join(tmp, fmt.Sprintf("ccm-%d-%v.log", n, preexisting))
	var ccm *testenv.Process
	var start time.Time
	var created time.Duration
	creating := make(chan error, 1)
	if preexisting {
		if created, err = createServices(ctx, client, n, nil); err != nil {
			return nil, err
		}
		start = time.Now()
		if ccm, err = testenv.StartProcess("ironlb-ccm", ccmBin, logPath, args...); err != nil {
			return nil, err
		}
		creating <- nil
	} else {
		if ccm, err = testenv.StartProcess("ironlb-ccm", ccmBin, logPath, args...); err != nil {
			return nil, err
		}
		// Start creating once the leader is serving.
		for i := 0; i < 300 && !strings.Contains(ccm.Log(), "Restored addresses"); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		start = time.Now()
		go func() {
			var err error
			created, err = createServices(ctx, client, n, noteCreated)
			creating <- err
		}()
	}
	defer ccm.Stop()

	// Bounded: creating may take long on a loaded machine, serving may take minutes after it.
	var createdDone time.Time
	for i := 0; ; i++ {
		select {
		case err := <-creating:
			if err != nil {
				return nil, err
			}
			createdDone = time.Now()
			continue
		case <-allDone:
		case <-time.After(time.Second):
			if i > 3600 || (!createdDone.IsZero() && time.Since(createdDone) > 5*time.Minute) {
				mu.Lock()
				got := len(served)
				mu.Unlock()
				return nil, fmt.Errorf("%d of %d Services got an address; ccm log:\n%s", got, n, ccm.Tail(30))
			}
			continue
		}
		break
	}
	elapsed := time.Since(start)
	rss := ccm.RSS()
	mode := "running"
	if preexisting {
		mode = "existing"
	}
	heap, err := heapInUse(ctx, ccm, filepath.Join(profiles, fmt.Sprintf("heap-%d-%s.pb.gz", n, mode)), profiles != "")
	if err != nil {
		return nil, err
	}
	anon, file := rssParts(ccm.Pid())
	memory := row{fmt.Sprintf("ironlb-ccm memory, %d Services", n), fmt.Sprintf("%d MiB RSS, %.1f MiB heap", rss>>20, float64(heap)/(1<<20)),
		fmt.Sprintf("after the run above; RSS: %d MiB anonymous, %d MiB of the binary's file; heap: live Go heap after a collection", anon>>20, file>>20)}
	if preexisting {
		return []row{
			{fmt.Sprintf("%d Services existing at start", n),
				fmt.Sprintf("%.1f s, %.0f Services/s", elapsed.Seconds(), float64(n)/elapsed.Seconds()),
				fmt.Sprintf("from ironlb-ccm's start to the last address (creating them took %.1f s before)", created.Seconds())},
			memory,
		}, nil
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	return []row{
		{fmt.Sprintf("%d Services created while running", n),
			fmt.Sprintf("%.1f s, %.0f Services/s", elapsed.Seconds(), float64(n)/elapsed.Seconds()),
			fmt.Sprintf("from the first create to the last address; the creates alone took %.1f s", created.Seconds())},
		{fmt.Sprintf("  create to address, %d Services", n),
			fmt.Sprintf("p50 %s, p99 %s, max %s", pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond)),
			"per Service, as a watching client sees it"},
		memory,
	}, nil
}

// rssParts splits a process's resident memory into anonymous memory (heap, stacks, the Go
// runtime's) and pages of files, which for ironlb-ccm is its own binary's code and read-only
// data as the kernel maps them in.
func rssParts(pid int) (anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb << 10
		case "RssFile:":
			file = kb << 10
		}
	}
	return anon, file
}

var (
	servingMetrics = regexp.MustCompile(`"Serving" what="metrics" address="([^"]+)"`)
	heapInUseLine  = regexp.MustCompile(`(?m)^go_memstats_heap_alloc_bytes ([0-9.e+]+)$`)
)

// heapInUse collects ironlb-ccm's garbage (the heap profile's gc=1), optionally saves that
// profile to path, and returns the bytes of live heap objects afterwards.
func heapInUse(ctx context.Context, ccm *testenv.Process, path string, save bool) (int64, error) {
	m := servingMetrics.FindStringSubmatch(ccm.Log())
	if m == nil {
		return 0, fmt.Errorf("ironlb-ccm logged no metrics address")
	}
	get := func(p string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m[1]+p, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", p, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	prof, err := get("/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, err
	}
	if save {
		if err := os.WriteFile(path, prof, 0o644); err != nil {
			return 0, err
		}
	}
	metrics, err := get("/metrics")
	if err != nil {
		return 0, err
	}
	h := heapInUseLine.FindSubmatch(metrics)
	if h == nil {
		return 0, fmt.Errorf("no go_memstats_heap_alloc_bytes in ironlb-ccm's metrics")
	}
	v, err := strconv.ParseFloat(string(h[1]), 64)
	return int64(v), err
}

var noNodePorts = false

// createServices creates n LoadBalancer Services with parallel clients.
// noteCreated, if set, is told each Service's name once it is created.
func createServices(ctx context.Context, client kubernetes.Interface, n int, noteCreated func(string)) (time.Duration, error) {
	start := time.Now()
	const workers = 32
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				svc := &v1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%05d", i), Namespace: "default"},
					Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "x"},
						AllocateLoadBalancerNodePorts: &noNodePorts,
						Ports:                         []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
				}
				if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if noteCreated != nil {
					noteCreated(svc.Name)
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return time.Since(start), nil
}
