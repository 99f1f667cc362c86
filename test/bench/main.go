// Command bench measures ironlb-ccm and prints one table: the allocator's cost per allocation,
// and how many Services per second get their address on a real kube-apiserver, both for
// Services that exist before ironlb-ccm starts and for Services created while it runs.
//
//	go run ./test/bench [-sizes 1000,10000]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

	"github.com/ironlb/ironlb/internal/testenv"
	"github.com/ironlb/ironlb/provider"
)

type row struct{ what, value, note string }

func main() {
	sizes := flag.String("sizes", "1000,10000", "numbers of Services to measure on the API server")
	ccmArgs := flag.String("ccm-args", "", "extra ironlb-ccm flags, space separated (e.g. to try the stock defaults)")
	skipAlloc := flag.Bool("skip-allocator", false, "skip the allocator micro-benchmarks")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	var rows []row
	if !*skipAlloc {
		r, err := allocatorRows(ctx)
		if err != nil {
			fail(err)
		}
		rows = append(rows, r...)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		fail(err)
	}
	tmp, err := os.MkdirTemp("", "ironlb-bench-")
	if err != nil {
		fail(err)
	}
	defer func() { if os.Getenv("IRONLB_BENCH_KEEP") == "" { os.RemoveAll(tmp) } }()
	ccm := filepath.Join(tmp, "ironlb-ccm")
	if err := testenv.GoBuild(ctx, root, "./cmd/ironlb-ccm", ccm); err != nil {
		fail(err)
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fail(err)
		}
		for _, preexisting := range []bool{true, false} {
			r, err := throughput(ctx, ccm, tmp, n, preexisting, strings.Fields(*ccmArgs))
			if err != nil {
				fail(err)
			}
			rows = append(rows, r...)
		}
	}
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
func allocatorRows(ctx context.Context) ([]row, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
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
func throughput(ctx context.Context, ccmBin, tmp string, n int, preexisting bool, extra []string) ([]row, error) {
	api, err := testenv.Start(ctx, "")
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
	if _, err := dynamic.NewForConfigOrDie(cfg).Resource(provider.IPPoolResource).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return nil, err
	}

	// Count Services with an address as the watch reports them.
	var done atomic.Int64
	allDone := make(chan struct{})
	var once sync.Once
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Services().Informer()
	counted := sync.Map{}
	check := func(obj any) {
		svc, ok := obj.(*v1.Service)
		if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
			return
		}
		if _, dup := counted.LoadOrStore(svc.Name, true); !dup && done.Add(1) == int64(n) {
			once.Do(func() { close(allDone) })
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }})
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	cache.WaitForCacheSync(stop, inf.HasSynced)

	startCCM := func() (*testenv.Process, error) {
		args := append([]string{"--kubeconfig=" + api.KubeconfigPath(), "--secure-port=0",
			"--metrics-bind-address=0", "--health-probe-bind-address=0"}, extra...)
		return testenv.StartProcess("ironlb-ccm", ccmBin, filepath.Join(tmp, fmt.Sprintf("ccm-%d-%v.log", n, preexisting)), args...)
	}
	var ccm *testenv.Process
	var start time.Time
	var created time.Duration
	if preexisting {
		if created, err = createServices(ctx, client, n); err != nil {
			return nil, err
		}
		start = time.Now()
		if ccm, err = startCCM(); err != nil {
			return nil, err
		}
	} else {
		if ccm, err = startCCM(); err != nil {
			return nil, err
		}
		// Wait for the leader to be serving: one Service gets an address first.
		if _, err := createServices(ctx, client, 0); err != nil {
			return nil, err
		}
		time.Sleep(2 * time.Second)
		start = time.Now()
		go func() { created, _ = createServices(ctx, client, n) }()
	}
	defer ccm.Stop()
	timeout := time.Duration(n)*10*time.Millisecond + time.Minute
	select {
	case <-allDone:
	case <-time.After(timeout):
		return nil, fmt.Errorf("%d of %d Services got an address within %s; ccm log:\n%s", done.Load(), n, timeout, ccm.Tail(30))
	}
	elapsed := time.Since(start)
	rss := ccm.RSS()
	mode := "created while running"
	if preexisting {
		mode = "existing at start"
	}
	note := fmt.Sprintf("creating them took %.1f s", created.Seconds())
	if !preexisting {
		note = fmt.Sprintf("includes creating them (%.1f s)", created.Seconds())
	}
	return []row{
		{fmt.Sprintf("%d Services %s", n, mode), fmt.Sprintf("%.1f s, %.0f Services/s", elapsed.Seconds(), float64(n)/elapsed.Seconds()), note},
		{fmt.Sprintf("ironlb-ccm memory after %d Services", n), fmt.Sprintf("%d MiB RSS", rss>>20), mode},
	}, nil
}

// createServices creates n LoadBalancer Services with parallel clients.
func createServices(ctx context.Context, client kubernetes.Interface, n int) (time.Duration, error) {
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
						Ports: []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
				}
				if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
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
