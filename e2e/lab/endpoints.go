package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	discoveryac "k8s.io/client-go/applyconfigurations/discovery/v1"
)

// Endpoint is a backend that behaves like a pod: an echo process in a node's
// namespace on addresses of its own from the node's pod range, listed in its
// Service's EndpointSlices with the conditions the test chose.
type Endpoint struct {
	Name        string   `json:"name"`
	Service     string   `json:"service"` // namespace/name
	Node        int      `json:"node"`
	Addrs       []string `json:"addrs"` // IPv4, IPv6
	Ready       bool     `json:"ready"`
	Serving     bool     `json:"serving"`
	Terminating bool     `json:"terminating"`
}

func (e *Endpoint) proc() string { return "echo/" + e.Name }

const sliceManager = "ironlb-lab"

// AddEndpoint starts a ready endpoint called name for svc on node n. It
// serves every target port of the Service (TCP with HTTP, UDP with a
// one-line answer); target ports must be numbers.
func (l *Lab) AddEndpoint(ctx context.Context, svc types.NamespacedName, name string, n int) (*Endpoint, error) {
	if n < 1 || n > l.Nodes {
		return nil, fmt.Errorf("endpoint %s: no node %d", name, n)
	}
	if _, ok := l.endpoint(name); ok {
		return nil, fmt.Errorf("endpoint %s exists", name)
	}
	s, err := l.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", name, err)
	}
	ep := &Endpoint{Name: name, Service: svc.String(), Node: n, Ready: true, Serving: true}
	if err := l.runEndpoint(ctx, ep, s); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.state.Endpoints = append(l.state.Endpoints, ep)
	err = writeState(l.dir, l.state)
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return ep, l.syncSlices(ctx, svc)
}

// runEndpoint gives ep fresh pod addresses on its node (on the node's
// loopback: the lab's kernel has no dummy links) and starts its echo
// process there.
func (l *Lab) runEndpoint(ctx context.Context, ep *Endpoint, s *corev1.Service) error {
	var tcp, udp []string
	for _, p := range s.Spec.Ports {
		if p.TargetPort.Type != 0 && p.TargetPort.IntVal == 0 {
			return fmt.Errorf("endpoint %s: Service %s/%s port %q has a named targetPort; the lab needs numbers", ep.Name, s.Namespace, s.Name, p.Name)
		}
		port := p.TargetPort.IntValue()
		if port == 0 {
			port = int(p.Port)
		}
		if p.Protocol == corev1.ProtocolUDP {
			udp = append(udp, strconv.Itoa(port))
		} else {
			tcp = append(tcp, strconv.Itoa(port))
		}
	}
	node := l.NodeName(ep.Node)
	addrs, err := l.freePodAddrs(ep.Node)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", ep.Name, err)
	}
	ep.Addrs = []string{addrs[0].String(), addrs[1].String()}
	if err := ipBatch(ctx, l.NodeNS(ep.Node),
		fmt.Sprintf("addr add %s/32 dev lo", addrs[0]),
		fmt.Sprintf("addr add %s/128 dev lo nodad", addrs[1]),
	); err != nil {
		return err
	}
	args := []string{"--name", ep.Name, "--node", node, "--listen", ep.Addrs[0], "--listen", ep.Addrs[1]}
	for _, p := range slices.Compact(slices.Sorted(slices.Values(tcp))) {
		args = append(args, "--tcp", p)
	}
	for _, p := range slices.Compact(slices.Sorted(slices.Values(udp))) {
		args = append(args, "--udp", p)
	}
	_, err = l.start(ep.proc(), l.NodeNS(ep.Node), l.bins.echoPath(l.dir), args...)
	return err
}

// freePodAddrs is the first pod address pair of node n that no endpoint holds.
func (l *Lab) freePodAddrs(n int) ([]netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	used := map[string]bool{}
	for _, e := range l.state.Endpoints {
		if e.Node == n && len(e.Addrs) > 0 {
			used[e.Addrs[0]] = true
		}
	}
	// On a real node the upper half of the range is CNI's (podRanges).
	last := 14
	if l.state.Kubelet {
		last = cniGateway - 1
	}
	for i := 1; i <= last; i++ {
		if a := l.PodAddrs(n, i); !used[a[0].String()] {
			return a, nil
		}
	}
	return nil, fmt.Errorf("node %s has no pod address left (%d endpoints)", l.NodeName(n), last)
}

// echoPath finds the echo binary also for a lab opened by another process.
func (b binaries) echoPath(dir string) string {
	if b.Echo != "" {
		return b.Echo
	}
	return dir + "/bin/echo"
}

func (b binaries) speakerPath(dir string) string {
	if b.Speaker != "" {
		return b.Speaker
	}
	return dir + "/bin/ironlb-speaker"
}

func (l *Lab) endpoint(name string) (*Endpoint, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.state.Endpoints {
		if e.Name == name {
			return e, true
		}
	}
	return nil, false
}

// SetEndpointConditions sets the endpoint's ready, serving and terminating
// conditions in its EndpointSlices.
func (l *Lab) SetEndpointConditions(ctx context.Context, name string, ready, serving, terminating bool) error {
	ep, ok := l.endpoint(name)
	if !ok {
		return fmt.Errorf("no endpoint %s", name)
	}
	l.mu.Lock()
	ep.Ready, ep.Serving, ep.Terminating = ready, serving, terminating
	err := writeState(l.dir, l.state)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.syncSlices(ctx, serviceName(ep.Service))
}

// MoveEndpoint stops the endpoint and starts it on node n with new
// addresses, as a rescheduled pod would be.
func (l *Lab) MoveEndpoint(ctx context.Context, name string, n int) error {
	ep, ok := l.endpoint(name)
	if !ok {
		return fmt.Errorf("no endpoint %s", name)
	}
	if n < 1 || n > l.Nodes {
		return fmt.Errorf("endpoint %s: no node %d", name, n)
	}
	svc := serviceName(ep.Service)
	s, err := l.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := l.stopEndpoint(ctx, ep); err != nil {
		return err
	}
	l.mu.Lock()
	ep.Node = n
	l.mu.Unlock()
	if err := l.runEndpoint(ctx, ep, s); err != nil {
		return err
	}
	l.mu.Lock()
	err = writeState(l.dir, l.state)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.syncSlices(ctx, svc)
}

// RemoveEndpoint stops the endpoint and drops it from its EndpointSlices.
func (l *Lab) RemoveEndpoint(ctx context.Context, name string) error {
	ep, ok := l.endpoint(name)
	if !ok {
		return fmt.Errorf("no endpoint %s", name)
	}
	if err := l.stopEndpoint(ctx, ep); err != nil {
		return err
	}
	l.mu.Lock()
	l.state.Endpoints = slices.DeleteFunc(l.state.Endpoints, func(e *Endpoint) bool { return e.Name == name })
	err := writeState(l.dir, l.state)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.syncSlices(ctx, serviceName(ep.Service))
}

func (l *Lab) stopEndpoint(ctx context.Context, ep *Endpoint) error {
	if err := l.Stop(ep.proc(), 2*time.Second); err != nil {
		return err
	}
	if err := l.forget(ep.proc()); err != nil {
		return err
	}
	return ipBatch(ctx, l.NodeNS(ep.Node),
		fmt.Sprintf("addr del %s/32 dev lo", ep.Addrs[0]),
		fmt.Sprintf("addr del %s/128 dev lo", ep.Addrs[1]),
	)
}

// Endpoints lists the endpoints of svc.
func (l *Lab) Endpoints(svc types.NamespacedName) []Endpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	var eps []Endpoint
	for _, e := range l.state.Endpoints {
		if e.Service == svc.String() {
			eps = append(eps, *e)
		}
	}
	return eps
}

func serviceName(s string) types.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}

// syncSlices writes svc's EndpointSlices, one per IP family of the Service,
// from the lab's endpoints, as the EndpointSlice controller would from pods.
func (l *Lab) syncSlices(ctx context.Context, svc types.NamespacedName) error {
	s, err := l.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("EndpointSlices of %s: %w", svc, err)
	}
	eps := l.Endpoints(svc)
	for _, fam := range s.Spec.IPFamilies {
		addrType, idx := discoveryv1.AddressTypeIPv4, 0
		if fam == corev1.IPv6Protocol {
			addrType, idx = discoveryv1.AddressTypeIPv6, 1
		}
		slice := discoveryac.EndpointSlice(fmt.Sprintf("%s-lab-%s", svc.Name, map[int]string{0: "ipv4", 1: "ipv6"}[idx]), svc.Namespace).
			WithLabels(map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   "lab.ironlb.io",
			}).
			WithAddressType(addrType)
		for _, p := range s.Spec.Ports {
			port := int32(p.TargetPort.IntValue())
			if port == 0 {
				port = p.Port
			}
			slice.WithPorts(discoveryac.EndpointPort().WithName(p.Name).WithProtocol(p.Protocol).WithPort(port))
		}
		for _, e := range eps {
			slice.WithEndpoints(discoveryac.Endpoint().
				WithAddresses(e.Addrs[idx]).
				WithNodeName(l.NodeName(e.Node)).
				WithConditions(discoveryac.EndpointConditions().WithReady(e.Ready).WithServing(e.Serving).WithTerminating(e.Terminating)))
		}
		if _, err := l.Client.DiscoveryV1().EndpointSlices(svc.Namespace).Apply(ctx, slice, metav1.ApplyOptions{FieldManager: sliceManager, Force: true}); err != nil {
			return fmt.Errorf("apply EndpointSlice of %s: %w", svc, err)
		}
	}
	return nil
}

// AllEndpoints lists every endpoint of the lab.
func (l *Lab) AllEndpoints() []Endpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	var eps []Endpoint
	for _, e := range l.state.Endpoints {
		eps = append(eps, *e)
	}
	return eps
}
