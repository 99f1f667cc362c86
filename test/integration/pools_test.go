package integration

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// The API server itself rejects malformed pools and peers: no webhook is involved.
func TestAPIServerRejectsMalformedPools(t *testing.T) {
	e := newEnv(t)
	bad := map[string]struct {
		addr, want string
	}{
		"not-cidr":      {"172.31.1.0/33", "must be a CIDR"},
		"host-bits":     {"172.31.1.5/24", "must not have host bits set"},
		"garbage":       {"hello", "must be a CIDR"},
		"reversed-v4":   {"172.31.1.20-172.31.1.3", "must not be greater"},
		"reversed-v4-2": {"172.31.2.0-172.31.1.255", "must not be greater"},
		"reversed-v6":   {"fd31::20-fd31::3", "must not be greater"},
		"reversed-v6-2": {"fd31:0:1::-fd31::ffff", "must not be greater"},
		"mixed-family":  {"172.31.1.1-fd31::1", "same family"},
		"three-parts":   {"172.31.1.1-172.31.1.2-172.31.1.3", "two addresses"},
		"half-range":    {"172.31.1.1-", "two addresses"},
	}
	for name, c := range bad {
		err := e.createPool("bad-"+name, spec(c.addr))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pool with %q: error %v, want one containing %q", c.addr, err, c.want)
		}
	}
	good := []string{"172.31.1.0/24", "172.31.2.1-172.31.2.1", "172.31.2.9-172.31.2.10", "fd31::/64",
		"fd31:0:1::5-fd31:0:1::1:0", "fd31::ff-fd31::100", "172.31.3.0-172.31.3.255"}
	for i, a := range good {
		if err := e.createPool("good-"+string(rune('a'+i)), spec(a)); err != nil {
			t.Errorf("valid pool %q rejected: %v", a, err)
		}
	}

	badBGP := map[string]struct {
		mutate func(*v1alpha1.IPPoolSpec)
		want   string
	}{
		"community-too-big": {func(s *v1alpha1.IPPoolSpec) {
			s.BGP = &v1alpha1.BGPAdvertisement{Communities: []v1alpha1.Community{"65536:1"}}
		}, "standard community"},
		"community-garbage": {func(s *v1alpha1.IPPoolSpec) {
			s.BGP = &v1alpha1.BGPAdvertisement{Communities: []v1alpha1.Community{"abc"}}
		}, "standard community"},
		"visibility": {func(s *v1alpha1.IPPoolSpec) { s.Visibility = "Secret" }, "Unsupported value"},
	}
	for name, c := range badBGP {
		s := spec("172.31.5.0/24")
		c.mutate(&s)
		if err := e.createPool("bad-"+name, s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	okBGP := spec("172.31.6.0/24")
	okBGP.BGP = &v1alpha1.BGPAdvertisement{Communities: []v1alpha1.Community{"65000:100", "65000:1:2", "no-export"}}
	if err := e.createPool("good-bgp", okBGP); err != nil {
		t.Errorf("valid communities rejected: %v", err)
	}

	peers := map[string]struct {
		spec map[string]any
		want string
	}{
		"asn-zero":   {map[string]any{"address": "172.31.0.1", "asn": 0, "localASN": 64512}, "asn"},
		"asn-big":    {map[string]any{"address": "172.31.0.1", "asn": 4294967295, "localASN": 64512}, "asn"},
		"bad-addr":   {map[string]any{"address": "172.31.0.300", "asn": 64512, "localASN": 64512}, "must be an IPv4 or IPv6 address"},
		"hold-short": {map[string]any{"address": "172.31.0.1", "asn": 64512, "localASN": 64512, "holdTime": "1s"}, "at least 3s"},
		"keepalive":  {map[string]any{"address": "172.31.0.1", "asn": 64512, "localASN": 64512, "holdTime": "9s", "keepaliveTime": "10s"}, "shorter than holdTime"},
	}
	for name, c := range peers {
		if err := e.createPeer(name, c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("BGPPeer %s: error %v, want one containing %q", name, err, c.want)
		}
	}
	if err := e.createPeer("router", map[string]any{"address": "fd31::1", "asn": 4200000000, "localASN": 64512}); err != nil {
		t.Errorf("valid BGPPeer rejected: %v", err)
	}
}

// An aggregation length that would announce more than a CIDR of the pool holds is rejected by
// the API server; pools of ranges are left to the speaker, which refuses such an aggregate.
func TestAPIServerRejectsAggregatesWiderThanThePool(t *testing.T) {
	e := newEnv(t)
	withAgg := func(v4, v6 *int32, addrs ...string) v1alpha1.IPPoolSpec {
		s := spec(addrs...)
		s.BGP = &v1alpha1.BGPAdvertisement{AggregationLength: v4, AggregationLengthV6: v6}
		return s
	}
	n := func(v int32) *int32 { return &v }
	bad := map[string]struct {
		spec v1alpha1.IPPoolSpec
		want string
	}{
		"v4-zero":         {withAgg(n(0), nil, "172.31.7.0-172.31.7.9"), "should be greater than or equal to 1"},
		"v6-zero":         {withAgg(nil, n(0), "fd31:7::-fd31:7::9"), "should be greater than or equal to 1"},
		"v4-wider":        {withAgg(n(16), nil, "172.31.7.0/24"), "bgp.aggregationLength must not be shorter"},
		"v4-wider-of-two": {withAgg(n(24), nil, "172.31.7.0/24", "172.31.8.0/28"), "bgp.aggregationLength must not be shorter"},
		"v6-wider":        {withAgg(nil, n(64), "fd31:7::/112"), "bgp.aggregationLengthV6 must not be shorter"},
		"v6-wider-dual":   {withAgg(n(24), n(96), "172.31.7.0/24", "fd31:7::/112"), "bgp.aggregationLengthV6 must not be shorter"},
		"v4-wider-dual":   {withAgg(n(8), nil, "172.31.7.0/24", "fd31:7::/112"), "bgp.aggregationLength must not be shorter"},
	}
	for name, c := range bad {
		if err := e.createPool("agg-bad-"+name, c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	good := map[string]v1alpha1.IPPoolSpec{
		"v4-equal":     withAgg(n(24), nil, "172.31.9.0/24"),
		"v4-narrower":  withAgg(n(28), nil, "172.31.10.0/24"),
		"v6-equal":     withAgg(nil, n(112), "fd31:9::/112"),
		"other-family": withAgg(n(24), n(120), "172.31.11.0/24", "fd31:11::/120"),
		"defaults":     withAgg(nil, nil, "172.31.12.0/24", "fd31:12::/120"),
		"ranges":       withAgg(n(16), n(64), "172.31.13.1-172.31.13.9", "fd31:13::1-fd31:13::9"),
	}
	for name, s := range good {
		if err := e.createPool("agg-good-"+name, s); err != nil {
			t.Errorf("%s: valid pool rejected: %v", name, err)
		}
	}
}

func (e *env) createPeer(name string, spec map[string]any) error {
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "ironlb.io/v1alpha1", "kind": "BGPPeer",
		"metadata": map[string]any{"name": name}, "spec": spec,
	})
	return e.client.CoreV1().RESTClient().Post().AbsPath("/apis/ironlb.io/v1alpha1/bgppeers").
		SetHeader("Content-Type", "application/json").Body(body).Do(e.ctx).Error()
}

// kubectl get ippools shows readiness, allocated and capacity columns.
func TestIPPoolTableShowsCapacityAllocatedAndReadiness(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.140.0/28", "fd31:0:140::/64"))
	e.startCCM("ccm")
	e.service("web")
	e.waitAllocated("web", 1)

	var table metav1.Table
	e.eventually("the table to show the counts", func() (bool, string) {
		raw, err := e.client.CoreV1().RESTClient().Get().AbsPath("/apis/ironlb.io/v1alpha1/ippools").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(e.ctx)
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal(raw, &table); err != nil {
			return false, err.Error()
		}
		cols := map[string]any{}
		for i, c := range table.ColumnDefinitions {
			if len(table.Rows) > 0 {
				cols[c.Name] = table.Rows[0].Cells[i]
			}
		}
		ok := cols["Ready"] == "True" && cols["IPv4 Allocated"] == "1" && cols["IPv4 Capacity"] == "16" &&
			cols["IPv6 Allocated"] == "0" && cols["IPv6 Capacity"] == "18446744073709551616"
		return ok, strings.TrimSpace(strings.ReplaceAll(string(mustJSON(cols)), "\n", " "))
	})
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// Nodes of kubelets run with --cloud-provider=external are initialized: the taint goes, the
// provider ID is set, the addresses stay.
func TestNodesAreInitialized(t *testing.T) {
	e := newEnv(t)
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "172.31.150.11"}},
		Spec:       v1.NodeSpec{Taints: []v1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: v1.TaintEffectNoSchedule}}},
	}
	created, err := e.client.CoreV1().Nodes().Create(e.ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "172.31.150.11"}}
	created.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := e.client.CoreV1().Nodes().UpdateStatus(e.ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startCCM("ccm")
	e.eventually("node-1 to be initialized", func() (bool, string) {
		n, err := e.client.CoreV1().Nodes().Get(e.ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
				return false, "still tainted"
			}
		}
		return n.Spec.ProviderID == "ironlb://node-1", "providerID " + n.Spec.ProviderID
	})
	n, _ := e.client.CoreV1().Nodes().Get(e.ctx, "node-1", metav1.GetOptions{})
	found := false
	for _, a := range n.Status.Addresses {
		found = found || (a.Type == v1.NodeInternalIP && a.Address == "172.31.150.11")
	}
	if !found {
		t.Errorf("node addresses %v lost the InternalIP", n.Status.Addresses)
	}
}
