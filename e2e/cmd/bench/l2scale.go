package main

// L2 mode at the size of a real cluster, with the speakers at their default
// heartbeat timers: what the heartbeats cost at rest, how long an address
// goes unanswered when its owner dies, and how long addresses go dark while
// every speaker is restarted in turn, as a DaemonSet rollout does. Each size
// runs in a lab of its own: one full node and the rest speaker-only (see
// lab/scale.go); nothing here sends traffic to the addresses, the LAN client
// only asks ARP who answers them.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/lab"
)

const (
	// l2LabName is the lab every size runs in, one after another; `lab
	// down --name bench-l2` removes what an interrupted run left.
	l2LabName  = "bench-l2"
	l2Pool     = "bench-l2"
	l2Services = 40
	// restWindow is the quiet window the rates at rest are taken over.
	restWindow = 10 * time.Second
	// failoverAsk is how long a failover round waits for answers; rounds
	// follow each other at once, so it is the failover times' resolution:
	// a new owner answers the first request that reaches it after it took
	// over, so a time reads up to one round long, never short.
	failoverAsk = 50 * time.Millisecond
)

// parseSizes reads -l2-sizes: node counts, comma-separated; "" or "none"
// for no L2 scale bench.
func parseSizes(s string) ([]int, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n > lab.MaxNodes {
			return nil, fmt.Errorf("-l2-sizes: %q is not a node count in 2..%d", f, lab.MaxNodes)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// l2Budget bounds the measures of one size, once its lab is up: 3, 30 and
// 100 nodes take about ten minutes together, lab up and down included.
func l2Budget(nodes int) time.Duration {
	return min(60*time.Second+4*time.Second*time.Duration(nodes), 4*time.Minute)
}

// l2UpBudget bounds bringing a size's lab up (binaries built once, then
// cached).
func l2UpBudget(nodes int) time.Duration {
	return 3*time.Minute + 2*time.Second*time.Duration(nodes)
}

// l2Kills is how many owners die per size: fewer where each kill costs more.
func l2Kills(nodes int) int {
	if nodes >= 100 {
		return 5
	}
	return 10
}

// l2Scale measures each size in turn; a size that fails or runs out of time
// gives the rows it measured and one saying where it stopped.
func l2Scale(ctx context.Context, sizes []int, budget time.Duration, profiles, trace string) []row {
	var rows []row
	for _, n := range sizes {
		if ctx.Err() != nil {
			break
		}
		b := budget
		if b == 0 {
			b = l2Budget(n)
		}
		rows = append(rows, l2ScaleSize(ctx, n, b, profiles, trace)...)
	}
	return rows
}

type l2Bench struct {
	ctx      context.Context
	l        *lab.Lab
	nodes    int
	probe    *lab.ARPProbe
	addrs    []netip.Addr
	rows     []row
	profiles string // where node 2's speaker's profiles at rest go; "" for none
	trace    string // where the traces go (-trace); "" for none
}

func (b *l2Bench) what(s string) string { return fmt.Sprintf("L2, %d nodes: %s", b.nodes, s) }

func (b *l2Bench) note(s string) string {
	n := fmt.Sprintf("%d nodes (1 full, %d speaker-only), %d Services; heartbeat every 100 ms, timeout 350 ms (defaults)", b.nodes, b.nodes-1, l2Services)
	if cores := runtime.NumCPU(); b.nodes > 15*cores {
		n += fmt.Sprintf("; OVERLOADED: %d speakers and the control plane share %d cores, so timers run late", b.nodes, cores)
	}
	if s != "" {
		n += "; " + s
	}
	return n
}

func (b *l2Bench) add(what, value, note string) {
	b.rows = append(b.rows, row{b.what(what), value, b.note(note)})
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func l2ScaleSize(parent context.Context, nodes int, budget time.Duration, profiles, trace string) []row {
	b := &l2Bench{nodes: nodes, profiles: profiles, trace: trace}
	began := time.Now()
	err := b.up(parent)
	ctx, cancel := context.WithTimeout(parent, budget)
	defer cancel()
	b.ctx = ctx
	if err != nil {
		err = fmt.Errorf("lab up (at most %v): %w", l2UpBudget(nodes), err)
	} else {
		err = b.run()
		if err != nil && ctx.Err() != nil && parent.Err() == nil {
			err = fmt.Errorf("out of its %v: %w", budget, err)
		}
	}
	if b.l != nil && b.trace != "" {
		b.keepLogs()
	}
	if b.l != nil {
		if derr := b.l.Down(context.WithoutCancel(parent)); derr != nil {
			err = errors.Join(err, fmt.Errorf("taking the lab down: %w", derr))
		}
	}
	if err != nil {
		progress("L2 at %d nodes: %v", nodes, err)
		b.add("stopped", "incomplete", fmt.Sprintf("after %.0f s: %v", time.Since(began).Seconds(), err))
	}
	return b.rows
}

func (b *l2Bench) up(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, l2UpBudget(b.nodes))
	defer cancel()
	progress("L2 at %d nodes: lab up", b.nodes)
	var speakerArgs []string
	if b.profiles != "" {
		if err := os.MkdirAll(b.profiles, 0o755); err != nil {
			return err
		}
		speakerArgs = []string{"--profiling"}
	}
	l, err := lab.Up(ctx, lab.Config{
		SpeakerArgs: speakerArgs,
		Name:        l2LabName, Nodes: 1, SpeakerOnlyNodes: b.nodes - 1, CCM: true, Speakers: true, Attached: true, Progress: os.Stderr,
		// One ironlb-ccm without leader election: a busy API server may
		// answer its renewals late, and it would quit.
		CCMArgs: []string{"--leader-elect=false"},
	})
	if err != nil {
		return err // Up took down what it had brought up
	}
	b.l = l
	return nil
}

func (b *l2Bench) run() error {
	l := b.l
	var err error
	if err := b.services(); err != nil {
		return err
	}
	if b.probe, err = l.OpenARPProbe(); err != nil {
		return err
	}
	defer b.probe.Close()
	if _, err := b.owners(60); err != nil {
		return err
	}
	if err := b.atRest(); err != nil {
		return err
	}
	// Leave the rolling restart about 4 s a speaker, at most 40% of the
	// size's time, at least 30 s.
	reserve := time.Duration(b.nodes) * 4 * time.Second
	if dl, ok := b.ctx.Deadline(); ok {
		reserve = max(min(reserve, time.Until(dl)*2/5), 30*time.Second)
	}
	if err := b.failovers(l2Kills(b.nodes), reserve); err != nil {
		return err
	}
	return b.rollingRestart()
}

// services creates the pool of every node and the Services in it, and waits
// until each has its address and the speakers hear each other.
func (b *l2Bench) services() error {
	l, ctx := b.l, b.ctx
	no := false
	wide := netip.PrefixFrom(l.L2ScalePool()[0].Addr(), 25)
	if err := l.CreatePool(ctx, l2Pool, v1alpha1.IPPoolSpec{
		AutoAssign: &no, Addresses: []v1alpha1.AddressRange{v1alpha1.AddressRange(wide.String())}, L2: &v1alpha1.L2Advertisement{},
	}); err != nil {
		return err
	}
	single := corev1.IPFamilyPolicySingleStack
	errs := make(chan error, l2Services)
	sem := make(chan struct{}, 8)
	for i := range l2Services {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("l2-%03d", i), Namespace: "default", Annotations: map[string]string{v1alpha1.AnnotationPool: l2Pool}},
			Spec: corev1.ServiceSpec{
				Type:                          corev1.ServiceTypeLoadBalancer,
				AllocateLoadBalancerNodePorts: &no,
				IPFamilyPolicy:                &single,
				IPFamilies:                    []corev1.IPFamily{corev1.IPv4Protocol},
				Ports:                         []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- b.createService(s)
		}()
	}
	for range l2Services {
		if err := <-errs; err != nil {
			return err
		}
	}
	for i := 0; ; i++ {
		list, err := l.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err == nil {
			b.addrs = b.addrs[:0]
			for _, s := range list.Items {
				if s.Annotations[v1alpha1.AnnotationPool] != l2Pool || len(s.Status.LoadBalancer.Ingress) == 0 {
					continue
				}
				if a, perr := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP); perr == nil {
					b.addrs = append(b.addrs, a)
				}
			}
			if len(b.addrs) == l2Services {
				break
			}
		}
		if i == 240 || ctx.Err() != nil {
			return fmt.Errorf("%d of %d Services have an address (%v)", len(b.addrs), l2Services, errors.Join(err, ctx.Err()))
		}
		time.Sleep(time.Second)
	}
	slices.SortFunc(b.addrs, netip.Addr.Compare)
	return l.WaitSpeakersConverged(ctx)
}

// createService creates s, trying again when a busy API server times out
// (it may have created it all the same).
func (b *l2Bench) createService(s *corev1.Service) error {
	var err error
	for try := 0; try < 3; try++ {
		_, err = b.l.Client.CoreV1().Services(s.Namespace).Create(b.ctx, s, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) && try > 0 {
			return nil
		}
		if !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err) && !apierrors.IsTooManyRequests(err) {
			break
		}
	}
	return fmt.Errorf("create Service %s: %w", s.Name, err)
}

// owners waits, at most rounds ARP rounds, until every address is answered
// by exactly one node, and returns who answers each.
func (b *l2Bench) owners(rounds int) (map[netip.Addr]int, error) {
	var none, several int
	for i := 0; i < rounds && b.ctx.Err() == nil; i++ {
		answers, err := b.probe.Ask(b.addrs, lab.ARPRoundWait)
		if err != nil {
			return nil, err
		}
		owners := map[netip.Addr]int{}
		none, several = 0, 0
		for _, a := range b.addrs {
			switch macs := answers[a]; len(macs) {
			case 0:
				none++
			case 1:
				owners[a] = b.l.NodeByMAC(macs[0])
			default:
				several++
			}
		}
		if none+several == 0 {
			return owners, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("after %d ARP rounds, of %d addresses %d answered by nobody and %d by several nodes (%v)", rounds, len(b.addrs), none, several, b.ctx.Err())
}

// sample is one reading of a speaker's metrics.
type sample struct {
	at                   time.Time
	heartbeats, cpu, rss float64
	cuts, lapses         float64 // not in ok: absent from an older speaker
	ok                   bool
}

// readAll reads every speaker's metrics, a few at a time.
func (b *l2Bench) readAll() []sample {
	out := make([]sample, b.nodes+1)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for n := 1; n <= b.nodes; n++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			before := time.Now()
			m, err := b.l.SpeakerMetrics(n)
			s := sample{at: before.Add(time.Since(before) / 2)}
			if err == nil {
				var ok1, ok2, ok3 bool
				s.heartbeats, ok1 = lab.MetricValue(m, "ironlb_speaker_heartbeats_sent_total")
				s.cpu, ok2 = lab.MetricValue(m, "process_cpu_seconds_total")
				s.rss, ok3 = lab.MetricValue(m, "process_resident_memory_bytes")
				s.cuts, _ = lab.MetricValue(m, "ironlb_speaker_heartbeat_cuts_total")
				s.lapses, _ = lab.MetricValue(m, "ironlb_speaker_heartbeat_lapses_total")
				s.ok = ok1 && ok2 && ok3
			}
			out[n] = s
		}()
	}
	wg.Wait()
	return out[1:]
}

// atRest measures heartbeats sent and CPU per speaker over a quiet window,
// and their memory at its end.
func (b *l2Bench) atRest() error {
	// Let the announcements and condition writes of the Services settle.
	if err := sleep(b.ctx, 5*time.Second); err != nil {
		return err
	}
	progress("L2 at %d nodes: %v at rest", b.nodes, restWindow)
	first := b.readAll()
	profiled := make(chan error, 1)
	if b.profiles != "" {
		go func() {
			profiled <- saveProfile(b.l, 2, fmt.Sprintf("profile?seconds=%d", int(restWindow.Seconds())),
				filepath.Join(b.profiles, fmt.Sprintf("l2-%d-nodes-at-rest.cpu.pb.gz", b.nodes)))
		}()
	}
	if err := sleep(b.ctx, restWindow); err != nil {
		return err
	}
	last := b.readAll()
	if b.profiles != "" {
		err := <-profiled
		if err == nil {
			err = saveProfile(b.l, 2, "heap?gc=1", filepath.Join(b.profiles, fmt.Sprintf("l2-%d-nodes-at-rest.heap.pb.gz", b.nodes)))
		}
		if err != nil {
			progress("L2 at %d nodes: profiles of node 2's speaker: %v", b.nodes, err)
		}
	}
	var beats, cpu, rss []float64
	var cuts, lapses float64
	for i := range first {
		if !first[i].ok || !last[i].ok {
			continue
		}
		dt := last[i].at.Sub(first[i].at).Seconds()
		beats = append(beats, (last[i].heartbeats-first[i].heartbeats)/dt)
		cpu = append(cpu, 100*(last[i].cpu-first[i].cpu)/dt)
		rss = append(rss, last[i].rss/(1<<20))
		cuts += last[i].cuts - first[i].cuts
		lapses += last[i].lapses - first[i].lapses
	}
	if len(beats) == 0 {
		return errors.New("no speaker's metrics could be read twice")
	}
	missing := ""
	if len(beats) < b.nodes {
		missing = fmt.Sprintf("; %d speakers' metrics could not be read", b.nodes-len(beats))
	}
	window := fmt.Sprintf("over %v at rest, from each speaker's metrics%s", restWindow, missing)
	b.add("heartbeat datagrams sent per node per second", fmt.Sprintf("mean %.1f, max %.1f", mean(beats), slices.Max(beats)),
		"ironlb_speaker_heartbeats_sent_total "+window)
	b.add("speaker CPU per node at rest", fmt.Sprintf("mean %.1f%%, max %.1f%% of a core", mean(cpu), slices.Max(cpu)),
		fmt.Sprintf("process_cpu_seconds_total %s; all speakers together %.2f cores", window, mean(cpu)*float64(len(cpu))/100))
	b.add("speaker RSS per node at rest", fmt.Sprintf("mean %.1f MiB, max %.1f MiB", mean(rss), slices.Max(rss)),
		"process_resident_memory_bytes at the window's end")
	b.add("false cuts at rest (all speakers)", fmt.Sprintf("%.0f cuts, %.0f lapses in %.0f speaker-seconds", cuts, lapses, float64(len(beats))*restWindow.Seconds()),
		"ironlb_speaker_heartbeat_cuts_total and ironlb_speaker_heartbeat_lapses_total "+window+"; each moves that node's addresses")
	return nil
}

// failovers kills, kills times, a speaker-only node that owns addresses
// (NodeDown) and measures per address from the kill to the first ARP round
// another node answers; then the node comes back and the lab settles. It
// stops early, with what it has, when less than reserve is left.
func (b *l2Bench) failovers(kills int, reserve time.Duration) error {
	var times []time.Duration
	killed := map[int]bool{}
	done, lost, splits := 0, 0, 0
	var stopped error
	for i := 0; i < kills; i++ {
		if dl, ok := b.ctx.Deadline(); ok && time.Until(dl) < reserve {
			stopped = fmt.Errorf("stopped after %d kills to leave time for the rolling restart", done)
			break
		}
		owners, err := b.owners(60)
		if err != nil {
			stopped = err
			break
		}
		victim := b.pickVictim(owners, killed)
		if victim == 0 {
			stopped = errors.New("no speaker-only node owns an address")
			break
		}
		var theirs []netip.Addr
		for _, a := range b.addrs {
			if owners[a] == victim {
				theirs = append(theirs, a)
			}
		}
		t0 := time.Now()
		if err := b.l.NodeDown(b.ctx, victim); err != nil {
			stopped = err
			break
		}
		back := map[netip.Addr]time.Duration{}
		for time.Since(t0) < 30*time.Second && len(back) < len(theirs) && b.ctx.Err() == nil {
			at := time.Now()
			answers, err := b.probe.Ask(theirs, failoverAsk)
			if err != nil {
				stopped = err
				break
			}
			for _, a := range theirs {
				if _, ok := back[a]; ok || len(answers[a]) == 0 {
					continue
				}
				if len(answers[a]) > 1 {
					splits++
				}
				back[a] = at.Sub(t0)
			}
		}
		worst := time.Duration(0)
		for _, d := range back {
			times = append(times, d)
			worst = max(worst, d)
		}
		lost += len(theirs) - len(back)
		done++
		progress("L2 at %d nodes: kill %d: node %d owned %d addresses, %d answered by another node again, the last after %v (%.0f s left)",
			b.nodes, i+1, victim, len(theirs), len(back), worst.Round(time.Millisecond), time.Until(deadline(b.ctx)).Seconds())
		if err := b.l.NodeUp(context.WithoutCancel(b.ctx), victim); err != nil {
			return errors.Join(stopped, err)
		}
		if stopped != nil {
			break
		}
		if err := b.l.WaitSpeakersConverged(b.ctx); err != nil {
			stopped = err
			break
		}
	}
	if done > 0 {
		note := fmt.Sprintf("node dies (link down, speaker killed); per address it owned, from the kill to the first ARP round another node answered (a round every %v from the LAN client: the resolution); %d kills, %d addresses", failoverAsk, done, len(times))
		if lost > 0 {
			note += fmt.Sprintf(", %d never answered within 30 s", lost)
		}
		if splits > 0 {
			note += fmt.Sprintf(", %d answered by several nodes", splits)
		}
		if stopped != nil {
			note += "; " + stopped.Error()
		}
		b.add("failover, owner node dies", quantiles(times), note)
	}
	if done == 0 || stopped != nil && !strings.HasPrefix(stopped.Error(), "stopped after") {
		return stopped
	}
	return nil
}

// pickVictim is a speaker-only node that owns addresses, one not killed yet
// while there are such.
func (b *l2Bench) pickVictim(owners map[netip.Addr]int, killed map[int]bool) int {
	var candidates []int
	for _, n := range owners {
		if n > b.l.Nodes && !slices.Contains(candidates, n) {
			candidates = append(candidates, n)
		}
	}
	slices.Sort(candidates)
	for _, n := range candidates {
		if !killed[n] {
			killed[n] = true
			return n
		}
	}
	if len(candidates) == 0 {
		return 0
	}
	clear(killed)
	killed[candidates[0]] = true
	return candidates[0]
}

// rollingRestart restarts every speaker in turn, as a DaemonSet rollout
// does (SIGTERM, start again, wait until healthy and hearing every other),
// while the LAN client asks ARP for every address; it reports how many
// seconds each address went unanswered. It stops early, with what it has,
// when the size's time is almost up.
func (b *l2Bench) rollingRestart() error {
	// The last failover's node came back: count only what the restarts do.
	if _, err := b.owners(60); err != nil {
		return fmt.Errorf("before the rolling restart: %w", err)
	}
	w := lab.NewARPWatch(b.probe, b.addrs)
	tr := b.traceFile("rolling-restart")
	defer tr.Close()
	if tr != nil {
		w.Trace = func(a netip.Addr, from, to time.Time, before, after int) {
			fmt.Fprintf(tr, "%s %s dark for %.1f s, until %s; answered by node %d before, node %d after\n",
				from.Format(traceTime), a, to.Sub(from).Seconds(), to.Format(traceTime), before, after)
		}
	}
	w.Start()
	// A round of answers first, so that the first stop is not measured
	// from a round that began with it.
	if err := sleep(b.ctx, lab.ARPRoundEvery); err != nil {
		w.Close()
		return err
	}
	began := time.Now()
	restarted := 0
	var stopped error
	for n := 1; n <= b.nodes; n++ {
		if dl, ok := b.ctx.Deadline(); ok && time.Until(dl) < 10*time.Second {
			stopped = fmt.Errorf("out of time after %d of %d speakers", restarted, b.nodes)
			break
		}
		name := b.l.SpeakerName(n)
		tr.Printf("%s stopping %s", time.Now().Format(traceTime), name)
		if err := b.l.Stop(name, 10*time.Second); err != nil {
			stopped = err
			break
		}
		tr.Printf("%s starting %s", time.Now().Format(traceTime), name)
		if err := b.l.Restart(name); err != nil {
			stopped = err
			break
		}
		if err := b.waitHealthy(n); err != nil {
			stopped = err
			break
		}
		if err := b.l.WaitSpeakersConverged(b.ctx); err != nil {
			stopped = err
			break
		}
		tr.Printf("%s %s is back, every speaker in the heartbeats", time.Now().Format(traceTime), name)
		restarted++
		if restarted%10 == 0 || restarted == b.nodes {
			progress("L2 at %d nodes: rolling restart: %d speakers restarted in %.0f s (%.0f s left)", b.nodes, restarted, time.Since(began).Seconds(), time.Until(deadline(b.ctx)).Seconds())
		}
	}
	elapsed := time.Since(began)
	// The last restart's stretches end within a round or two, and a round
	// is taken once its answers' time is up.
	_ = sleep(b.ctx, 2*lab.ARPRoundEvery+lab.ARPRoundWait)
	w.Close()
	seen := w.Step()
	dark, rounds, splits := seen.Total, seen.Rounds, len(seen.Splits)
	for _, sp := range seen.Splits {
		tr.Printf("%s %s answered by several nodes: %v", sp.At.Format(traceTime), sp.Addr, sp.Nodes)
	}
	_, _, _, werr := w.Last()
	if werr != nil && stopped == nil {
		stopped = werr
	}
	if restarted > 0 {
		var per, darkOnes []time.Duration
		for _, a := range b.addrs {
			per = append(per, dark[a])
			if dark[a] > 0 {
				darkOnes = append(darkOnes, dark[a])
			}
		}
		slices.Sort(per)
		slices.Sort(darkOnes)
		ofDark := ""
		if len(darkOnes) > 0 {
			ofDark = fmt.Sprintf(" (of the dark ones %.1f s)", median(darkOnes).Seconds())
		}
		note := fmt.Sprintf("%d of %d speakers restarted one by one (SIGTERM, start, healthy, converged) in %.0f s; %d ARP rounds, every %v from the LAN client",
			restarted, b.nodes, elapsed.Seconds(), rounds, lab.ARPRoundEvery)
		if splits > 0 {
			note += fmt.Sprintf("; %d answers by several nodes at once", splits)
		}
		if stopped != nil {
			note += "; " + stopped.Error()
		}
		b.add("rolling restart, seconds dark per address",
			fmt.Sprintf("max %.1f s, median %.1f s%s; %d of %d addresses dark at all", per[len(per)-1].Seconds(), median(per).Seconds(), ofDark, len(darkOnes), len(per)), note)
	}
	if restarted == 0 || stopped != nil && !strings.HasPrefix(stopped.Error(), "out of time") {
		return stopped
	}
	return nil
}

// waitHealthy waits until node n's speaker answers its health probe.
func (b *l2Bench) waitHealthy(n int) error {
	url := "http://" + net.JoinHostPort(b.l.NodeAddrs(n)[0].String(), "10293") + "/healthz"
	hc := &http.Client{Timeout: time.Second}
	for i := 0; i < 300 && b.ctx.Err() == nil; i++ {
		if !b.l.Alive(b.l.SpeakerName(n)) {
			return fmt.Errorf("%s exited: %s", b.l.SpeakerName(n), b.l.Tail(b.l.SpeakerName(n), 10))
		}
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after 30 s (%v)", b.l.SpeakerName(n), b.ctx.Err())
}

// quantiles says median and p99 of ds, or median and max when there are
// too few for a 99th percentile.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no address answered again"
	}
	slices.Sort(ds)
	top, name := ds[len(ds)-1], "max"
	if len(ds) >= 100 {
		top, name = ds[int(math.Ceil(0.99*float64(len(ds))))-1], "p99"
	}
	return fmt.Sprintf("median %.2f s, %s %.2f s (n=%d)", median(ds).Seconds(), name, top.Seconds(), len(ds))
}

func median(sorted []time.Duration) time.Duration {
	m := len(sorted) / 2
	if len(sorted)%2 == 0 {
		return (sorted[m-1] + sorted[m]) / 2
	}
	return sorted[m]
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func deadline(ctx context.Context) time.Time {
	dl, _ := ctx.Deadline()
	return dl
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// traceTime is how the traces write times, to match them with the lab's
// logs.
const traceTime = "15:04:05.000"

// traceLog is one trace file of -trace; a nil one writes nothing.
type traceLog struct{ f *os.File }

func (t *traceLog) Printf(format string, args ...any) {
	if t != nil {
		fmt.Fprintf(t.f, format+"\n", args...)
	}
}

func (t *traceLog) Write(p []byte) (int, error) {
	if t == nil {
		return len(p), nil
	}
	return t.f.Write(p)
}

func (t *traceLog) Close() {
	if t != nil {
		t.f.Close()
	}
}

// traceFile opens the trace of one measure, or returns nil without -trace.
func (b *l2Bench) traceFile(what string) *traceLog {
	if b.trace == "" {
		return nil
	}
	if err := os.MkdirAll(b.trace, 0o755); err != nil {
		progress("L2 at %d nodes: trace: %v", b.nodes, err)
		return nil
	}
	f, err := os.Create(filepath.Join(b.trace, fmt.Sprintf("l2-%d-nodes-%s.txt", b.nodes, what)))
	if err != nil {
		progress("L2 at %d nodes: trace: %v", b.nodes, err)
		return nil
	}
	return &traceLog{f}
}

// keepLogs copies the lab's logs into the trace folder before the lab goes.
func (b *l2Bench) keepLogs() {
	dst := filepath.Join(b.trace, fmt.Sprintf("l2-%d-nodes-logs", b.nodes))
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(b.l.Dir(), "logs"))); err != nil {
		progress("L2 at %d nodes: keeping the logs: %v", b.nodes, err)
		return
	}
	progress("L2 at %d nodes: logs kept in %s", b.nodes, dst)
}
