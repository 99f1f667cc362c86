package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

const (
	v4a = "172.31.0.10-172.31.0.19"
	v6a = "fd31::10-fd31::19"
	v4b = "172.31.1.10-172.31.1.19"
	v6b = "fd31::1:10-fd31::1:19"
)

func TestAllocate_FamiliesFollowPolicyAndOrder(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "single-stack IPv4 gets one IPv4 address",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{allocFrom(svc("default/web"), "lab-a", "172.31.0.10")},
	}, {
		name:  "single-stack uses only the first listed family",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{alloc(svc("default/web", stack(SingleStack, IPv6, IPv4)), "fd31::10")},
	}, {
		name:  "require dual-stack gets both families in the Service's order",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{alloc(svc("default/web", stack(RequireDualStack, IPv6, IPv4)), "fd31::10", "172.31.0.10")},
	}, {
		name:  "require dual-stack takes both from one pool, skipping single-family pools",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{allocFrom(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), "lab-b", "172.31.1.10", "fd31::1:10")},
	}, {
		name:  "require dual-stack fails when no pool has both families",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v6b)},
		steps: []step{allocFails(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), ReasonDualStack,
			msg("no pool it may use has both IPv4 and IPv6", "lab-a, lab-b"))},
	}, {
		name:  "require dual-stack with one listed family fails",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{allocFails(svc("default/web", stack(RequireDualStack, IPv4)), ReasonDualStack, msg("lists only IPv4"))},
	}, {
		name:  "prefer dual-stack gets both when a pool has both",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{alloc(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "172.31.0.10", "fd31::10")},
	}, {
		name:  "prefer dual-stack prefers a later pool with both over an earlier single-family pool",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{allocFrom(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "lab-b", "172.31.1.10", "fd31::1:10")},
	}, {
		name:  "prefer dual-stack without a dual pool gets the first family some pool has",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v6b)},
		steps: []step{allocFrom(svc("default/web", stack(PreferDualStack, IPv6, IPv4)), "lab-b", "fd31::1:10")},
	}, {
		name:  "prefer dual-stack falls back to the second family when the first is missing",
		pools: []Pool{pool("lab-b", v6b)},
		steps: []step{alloc(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "fd31::1:10")},
	}, {
		name:  "prefer dual-stack falls back to one family when the dual pool is full in the other",
		pools: []Pool{pool("lab-a", "172.31.0.10", v6a)},
		steps: []step{
			alloc(svc("default/first"), "172.31.0.10"),
			alloc(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "fd31::10"),
		},
	}, {
		name:  "single-stack IPv6 without any IPv6 pool fails",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", stack(SingleStack, IPv6)), ReasonNoPool, msg("has IPv6 addresses", "lab-a"))},
	}, {
		name:  "a Service without families is an invalid request",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", stack(SingleStack)), ReasonInvalidRequest, msg("no IP family"))},
	}, {
		name:  "an exhausted pool says so",
		pools: []Pool{pool("lab-a", "172.31.0.10-172.31.0.11")},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			alloc(svc("default/b"), "172.31.0.11"),
			allocFails(svc("default/c"), ReasonPoolExhausted, msg("no free IPv4 address left in pool lab-a")),
		},
	}})
}

func TestAllocate_PoolEligibility(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "internal Service gets an internal pool, never an external one",
		pools: []Pool{pool("lab-a", v4a), internalPool("lab-int", v4b)},
		steps: []step{allocFrom(svc("default/web", asInternal()), "lab-int", "172.31.1.10")},
	}, {
		name:  "external Service never gets an internal pool",
		pools: []Pool{internalPool("lab-int", v4b)},
		steps: []step{allocFails(svc("default/web"), ReasonNoPool, msg("external"))},
	}, {
		name:  "internal Service without any internal pool fails",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", asInternal()), ReasonNoInternalPool, msg("visibility Internal"))},
	}, {
		name:  "naming an unknown pool fails and names it",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", inPools("lab-a", "lab-x")), ReasonUnknownPool, msg(`pool "lab-x" named by the Service does not exist`))},
	}, {
		name:  "named pools restrict the choice",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{allocFrom(svc("default/web", inPools("lab-b")), "lab-b", "172.31.1.10")},
	}, {
		name:  "a pool without autoAssign serves Services that name it",
		pools: []Pool{manual(pool("lab-a", v4a))},
		steps: []step{allocFrom(svc("default/web", inPools("lab-a")), "lab-a", "172.31.0.10")},
	}, {
		name:  "a pool without autoAssign is not used unnamed",
		pools: []Pool{manual(pool("lab-a", v4a))},
		steps: []step{allocFails(svc("default/web"), ReasonNoPool, msg("autoAssign"))},
	}, {
		name:  "a pool without autoAssign serves a requested address",
		pools: []Pool{manual(pool("lab-a", v4a)), pool("lab-b", v4b)},
		steps: []step{allocFrom(svc("default/web", ips("172.31.0.15")), "lab-a", "172.31.0.15")},
	}, {
		name: "matching reserved pools come first, lowest priority first",
		pools: []Pool{
			pool("lab-a", v4a),
			reserved(pool("lab-r10", "172.31.2.10-172.31.2.19"), 10, "team=blue", ""),
			reserved(pool("lab-r5", "172.31.3.10-172.31.3.19"), 5, "team=blue", "tier=web"),
		},
		steps: []step{
			allocFrom(svc("blue/web", nsLabels("team=blue"), svcLabels("tier=web")), "lab-r5", "172.31.3.10"),
			allocFrom(svc("blue/db", nsLabels("team=blue"), svcLabels("tier=db")), "lab-r10", "172.31.2.10"),
			allocFrom(svc("red/web", nsLabels("team=red"), svcLabels("tier=web")), "lab-a", "172.31.0.10"),
		},
	}, {
		name:  "reserved pool with nil selectors serves every Service",
		pools: []Pool{pool("lab-a", v4a), reserved(pool("lab-z", v4b), 1, "", "")},
		steps: []step{allocFrom(svc("default/web"), "lab-z", "172.31.1.10")},
	}, {
		name:  "a reserved pool never serves a non-matching Service, even when named",
		pools: []Pool{pool("lab-a", v4a), reserved(pool("lab-r", v4b), 1, "team=blue", "")},
		steps: []step{allocFails(svc("red/web", nsLabels("team=red"), inPools("lab-r")), ReasonNoPool,
			msg("pool lab-r is reserved for other Services"))},
	}, {
		name:  "unreserved pools are tried by name",
		pools: []Pool{pool("lab-b", v4b), pool("lab-a", v4a)},
		steps: []step{allocFrom(svc("default/web"), "lab-a", "172.31.0.10")},
	}, {
		name:  "a named pool of the wrong visibility fails with the reason",
		pools: []Pool{internalPool("lab-int", v4b)},
		steps: []step{allocFails(svc("default/web", inPools("lab-int")), ReasonNoPool, msg("pool lab-int serves only internal Services"))},
	}, {
		name: "a pool in conflict is never used",
		pools: []Pool{
			created(pool("lab-a", "172.31.0.10-172.31.0.10"), 100),
			created(pool("lab-b", "172.31.0.10-172.31.0.19"), 200),
		},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			allocFails(svc("default/b"), ReasonPoolExhausted, msg("lab-a")),
			allocFails(svc("default/c", inPools("lab-b")), ReasonNoPool, msg("pool lab-b is in conflict with lab-a")),
		},
	}})
}

func TestAllocate_RequestedIPOutsidePoolsIsRejected(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "outside every pool",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{allocFails(svc("default/web", ips("172.31.5.9")), ReasonNotInPool,
			msg("requested address 172.31.5.9 is not in any pool this Service may use (pools: lab-a, lab-b)"))},
	}, {
		name:  "in a pool of the other visibility",
		pools: []Pool{pool("lab-a", v4a), internalPool("lab-int", v4b)},
		steps: []step{allocFails(svc("default/web", ips("172.31.1.12")), ReasonNotInPool,
			msg("172.31.1.12", "pool lab-int serves only internal Services"))},
	}, {
		name:  "in a pool the Service does not name",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{allocFails(svc("default/web", ips("172.31.1.12"), inPools("lab-a")), ReasonNotInPool,
			msg("(pools: lab-a)", "pool lab-b is not one the Service names"))},
	}, {
		name:  "only in a pool in conflict",
		pools: []Pool{created(pool("lab-a", v4a), 1), created(pool("lab-b", "172.31.0.15-172.31.0.25"), 2)},
		steps: []step{allocFails(svc("default/web", ips("172.31.0.22")), ReasonNotInPool, msg("pool lab-b is in conflict with lab-a"))},
	}})
}

func TestAllocate_RequestedIPs(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a requested address in a pool is given",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFrom(svc("default/web", ips("172.31.0.15")), "lab-a", "172.31.0.15")},
	}, {
		name:  "two requested addresses of one family are rejected",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", ips("172.31.0.15", "172.31.0.16")), ReasonInvalidRequest,
			msg("172.31.0.15 and 172.31.0.16 are both IPv4"))},
	}, {
		name:  "a requested address of a family the Service does not use is rejected",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{allocFails(svc("default/web", ips("fd31::15")), ReasonWrongFamily,
			msg("requested address fd31::15 is IPv6, but the Service uses only IPv4"))},
	}, {
		name:  "single-stack Service listing both families may not request the second",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{allocFails(svc("default/web", stack(SingleStack, IPv4, IPv6), ips("fd31::15")), ReasonWrongFamily, msg("fd31::15"))},
	}, {
		name:  "requested addresses in different pools are rejected",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v6b)},
		steps: []step{allocFails(svc("default/web", stack(RequireDualStack, IPv4, IPv6), ips("172.31.0.15", "fd31::1:15")),
			ReasonInvalidRequest, msg("different pools (lab-a and lab-b)"))},
	}, {
		name:  "dual-stack Service requesting one family gets the other from the same pool",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{allocFrom(svc("default/web", stack(RequireDualStack, IPv4, IPv6), ips("fd31::1:15")), "lab-b", "172.31.1.10", "fd31::1:15")},
	}, {
		name:  "prefer dual-stack requesting an address in a single-family pool gets just that",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{allocFrom(svc("default/web", stack(PreferDualStack, IPv4, IPv6), ips("172.31.0.15")), "lab-a", "172.31.0.15")},
	}, {
		name:  "require dual-stack requesting an address in a single-family pool fails",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{allocFails(svc("default/web", stack(RequireDualStack, IPv4, IPv6), ips("172.31.0.15")), ReasonDualStack, msg("(pools: lab-a)"))},
	}, {
		name:  "a requested address held by another Service is rejected, naming the holder",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/first", ips("172.31.0.15")), "172.31.0.15"),
			allocFails(svc("other/second", ips("172.31.0.15")), ReasonInUse, msg("172.31.0.15 is already used by default/first")),
			holding("default/first", "172.31.0.15"),
		},
	}, {
		name:  "a requested address held by a sharing-compatible Service is shared",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/dns-tcp", key("dns"), withPorts("TCP/53")), "172.31.0.10"),
			alloc(svc("default/dns-udp", key("dns"), withPorts("UDP/53"), ips("172.31.0.10")), "172.31.0.10"),
		},
	}, {
		name:  "avoidBuggyIPs blocks a requested .255 address",
		pools: []Pool{avoidBuggy(pool("lab-a", "172.31.0.0/23"))},
		steps: []step{allocFails(svc("default/web", ips("172.31.0.255")), ReasonInvalidRequest,
			msg("172.31.0.255 ends in .0 or .255, which pool lab-a avoids"))},
	}, {
		name:  "requesting the same address twice is one request",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{alloc(svc("default/web", ips("172.31.0.15", "172.31.0.15")), "172.31.0.15")},
	}, {
		name:  "IPv4-mapped requested addresses are read as IPv4",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{alloc(svc("default/web", ips("::ffff:172.31.0.15")), "172.31.0.15")},
	}})
}

func TestAllocate_Sharing(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "same key in one namespace with different ports shares the address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			counts("lab-a", IPv4, "10", "1", "9"),
		},
	}, {
		name:  "the same port number over another protocol does not clash",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/dns-tcp", key("dns"), withPorts("TCP/53")), "172.31.0.10"),
			alloc(svc("default/dns-udp", key("dns"), withPorts("udp/53")), "172.31.0.10"),
		},
	}, {
		name:  "a port clash in the group fails, naming the port and the Service",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			allocFails(svc("default/http2", key("web"), withPorts("TCP/8080", "TCP/80")), ReasonSharingClash,
				msg("port TCP/80", "default/http")),
		},
	}, {
		name:  "the same key in another namespace does not share",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("other/https", key("web"), withPorts("TCP/443")), "172.31.0.11"),
			allocFails(svc("other/web", key("web"), withPorts("TCP/8443"), ips("172.31.0.10")), ReasonInUse, msg("already used by default/http")),
		},
	}, {
		name:  "a different key does not share",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			allocFails(svc("default/other", key("other"), withPorts("TCP/443"), ips("172.31.0.10")), ReasonInUse, msg("default/http")),
		},
	}, {
		name:  "without a key nothing is shared",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", withPorts("TCP/80")), "172.31.0.10"),
			allocFails(svc("default/https", withPorts("TCP/443"), ips("172.31.0.10")), ReasonInUse, msg("default/http")),
		},
	}, {
		name:  "a requested address shared with a clashing Service names the port",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			allocFails(svc("default/http2", key("web"), withPorts("TCP/80"), ips("172.31.0.10")), ReasonSharingClash,
				msg("port TCP/80 is already used on it by default/http")),
		},
	}, {
		name:  "an address is freed only when its last holder releases it",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			release("default/http"),
			counts("lab-a", IPv4, "10", "1", "9"),
			release("default/https", "172.31.0.10"),
			counts("lab-a", IPv4, "10", "0", "10"),
		},
	}, {
		name:  "a dual-stack member takes the group's address and the other family from its pool",
		pools: []Pool{pool("lab-a", v4a, v6a), pool("lab-b", v4b, v6b)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80"), inPools("lab-b")), "172.31.1.10"),
			allocFrom(svc("default/https", key("web"), withPorts("TCP/443"), stack(RequireDualStack, IPv6, IPv4)), "lab-b",
				"fd31::1:10", "172.31.1.10"),
		},
	}, {
		name:  "a member whose pools exclude the group's address fails",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80"), inPools("lab-b")), "172.31.1.10"),
			allocFails(svc("default/https", key("web"), withPorts("TCP/443"), inPools("lab-a")), ReasonSharingClash,
				msg(`sharing key "web" hold 172.31.1.10`, "(pools: lab-a)")),
		},
	}, {
		name:  "the group's address is followed even when the pool order would pick another pool",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80"), ips("172.31.1.15")), "172.31.1.15"),
			allocFrom(svc("default/https", key("web"), withPorts("TCP/443")), "lab-b", "172.31.1.15"),
		},
	}})
}

func TestAllocate_ExistingHoldings(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "allocating again keeps the address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/other"), "172.31.0.11"),
		},
	}, {
		name:  "an address whose pool was deleted is kept with a warning",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			allocFrom(svc("default/web", inPools("lab-a")), "lab-a", "172.31.0.10"),
			setPools(pool("lab-b", v4b)),
			allocWarns(svc("default/web", inPools("lab-a")), "lab-a", "172.31.0.10 is no longer in any pool", "172.31.0.10"),
			allocWarns(svc("default/web", inPools("lab-a")), "lab-a", `pool "lab-a" named by the Service does not exist`, "172.31.0.10"),
			allocFails(svc("default/web", inPools("lab-a", "lab-c")), ReasonUnknownPool, msg(`pools "lab-a", "lab-c"`), "172.31.0.10"),
		},
	}, {
		name:  "an address left outside a shrunk pool is kept with a warning, the other family too",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{
			alloc(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), "172.31.0.10", "fd31::10"),
			setPools(pool("lab-a", "172.31.0.11-172.31.0.19", v6a)),
			allocWarns(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), "lab-a", "172.31.0.10 is no longer in any pool",
				"172.31.0.10", "fd31::10"),
			counts("lab-a", IPv4, "9", "0", "9"),
			counts("lab-a", IPv6, "10", "1", "9"),
		},
	}, {
		name:  "an address left in a pool now in conflict is kept with a warning",
		pools: []Pool{created(pool("lab-b", v4a), 2)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(created(pool("lab-a", "172.31.0.15"), 1), created(pool("lab-b", v4a), 2)),
			allocWarns(svc("default/web"), "lab-b", "only in pool lab-b, which is in conflict with lab-a", "172.31.0.10"),
		},
	}, {
		name:  "a changed requested address moves the Service and frees the old one",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/web", ips("172.31.0.17")), "172.31.0.17"),
			counts("lab-a", IPv4, "10", "1", "9"),
			alloc(svc("default/other", ips("172.31.0.10")), "172.31.0.10"),
		},
	}, {
		name:  "a failed new request keeps the old address and reports why",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			allocFails(svc("default/web", ips("172.31.5.9")), ReasonNotInPool, msg("172.31.5.9"), "172.31.0.10"),
			allocFails(svc("default/web", inPools("lab-x")), ReasonUnknownPool, msg("lab-x"), "172.31.0.10"),
			allocFails(svc("default/web", inPools("lab-a", "lab-x")), ReasonUnknownPool, msg(`pool "lab-x"`), "172.31.0.10"),
			alloc(svc("default/web"), "172.31.0.10"),
		},
	}, {
		name:  "a Service asking for another Service's address does not disturb it",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			alloc(svc("default/b"), "172.31.0.11"),
			allocFails(svc("default/b", ips("172.31.0.10")), ReasonInUse, msg("default/a"), "172.31.0.11"),
			holding("default/a", "172.31.0.10"),
			alloc(svc("default/a"), "172.31.0.10"),
		},
	}, {
		name:  "going from single-stack to dual-stack keeps the IPv4 address",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{
			alloc(svc("default/other", stack(SingleStack, IPv6)), "fd31::10"),
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), "172.31.0.10", "fd31::11"),
		},
	}, {
		name:  "going from dual-stack to single-stack frees the other family",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{
			alloc(svc("default/web", stack(RequireDualStack, IPv4, IPv6)), "172.31.0.10", "fd31::10"),
			alloc(svc("default/web", stack(SingleStack, IPv6)), "fd31::10"),
			counts("lab-a", IPv4, "10", "0", "10"),
		},
	}, {
		name:  "prefer dual-stack gains the other family in place when its pool gains it",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b, v6b)},
		steps: []step{
			alloc(svc("default/web", stack(PreferDualStack, IPv4, IPv6), inPools("lab-a")), "172.31.0.10"),
			alloc(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "172.31.0.10"),
			setPools(pool("lab-a", v4a, v6a), pool("lab-b", v4b, v6b)),
			allocFrom(svc("default/web", stack(PreferDualStack, IPv4, IPv6)), "lab-a", "172.31.0.10", "fd31::10"),
		},
	}, {
		name:  "becoming internal moves the Service to an internal pool",
		pools: []Pool{pool("lab-a", v4a), internalPool("lab-int", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			allocFrom(svc("default/web", asInternal()), "lab-int", "172.31.1.10"),
			counts("lab-a", IPv4, "10", "0", "10"),
		},
	}, {
		name:  "a pool turning internal keeps its external Services where they are, with a warning",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(internalPool("lab-a", v4a), pool("lab-b", v4b)),
			allocWarns(svc("default/web"), "lab-a", "172.31.0.10 is in pool lab-a, which serves only internal Services", "172.31.0.10"),
			allocFrom(svc("default/new"), "lab-b", "172.31.1.10"),
		},
	}, {
		name:  "naming another pool moves the Service",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/web", inPools("lab-a", "lab-b")), "172.31.0.10"),
			allocFrom(svc("default/web", inPools("lab-b")), "lab-b", "172.31.1.10"),
		},
	}, {
		name:  "a pool losing autoAssign or gaining a reservation does not move its Services",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(manual(reserved(pool("lab-a", v4a), 1, "team=blue", "")), pool("lab-b", v4b)),
			allocFrom(svc("default/web"), "lab-a", "172.31.0.10"),
		},
	}, {
		name:  "dropping the sharing key gives the Service its own address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			alloc(svc("default/https", withPorts("TCP/443")), "172.31.0.11"),
			holding("default/http", "172.31.0.10"),
		},
	}, {
		name:  "a port change that clashes with a co-holder fails and keeps the address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			allocFails(svc("default/https", key("web"), withPorts("TCP/80")), ReasonSharingClash, msg("TCP/80", "default/http"), "172.31.0.10"),
			holding("default/http", "172.31.0.10"),
		},
	}, {
		name:  "a port change that does not clash keeps the shared address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			alloc(svc("default/https", key("web"), withPorts("TCP/8443")), "172.31.0.10"),
			allocFails(svc("default/third", key("web"), withPorts("TCP/8443")), ReasonSharingClash, msg("TCP/8443", "default/https")),
		},
	}, {
		name:  "the requested address the Service already holds is kept even if its pool left",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web", ips("172.31.0.15")), "172.31.0.15"),
			setPools(),
			allocWarns(svc("default/web", ips("172.31.0.15")), "lab-a", "no longer in any pool", "172.31.0.15"),
		},
	}})
}

func TestAllocate_FreeAddressSearch(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a freed address is reused only after the rest of the range had its turn",
		pools: []Pool{pool("lab-a", "172.31.0.10-172.31.0.13")},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			alloc(svc("default/b"), "172.31.0.11"),
			release("default/a", "172.31.0.10"),
			alloc(svc("default/c"), "172.31.0.12"),
			alloc(svc("default/d"), "172.31.0.13"),
			alloc(svc("default/e"), "172.31.0.10"),
			allocFails(svc("default/f"), ReasonPoolExhausted, msg("lab-a")),
		},
	}, {
		name:  "avoidBuggyIPs skips .255 and .0",
		pools: []Pool{avoidBuggy(pool("lab-a", "172.31.0.254-172.31.1.1"))},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.254"),
			alloc(svc("default/b"), "172.31.1.1"),
			allocFails(svc("default/c"), ReasonPoolExhausted, msg("lab-a")),
			counts("lab-a", IPv4, "2", "2", "0"),
		},
	}, {
		name:  "avoidBuggyIPs skips runs of used and buggy addresses",
		pools: []Pool{avoidBuggy(pool("lab-a", "172.31.0.253-172.31.2.2"))},
		steps: []step{
			restore(svc("default/x"), "172.31.0.253"),
			restore(svc("default/y"), "172.31.0.254"),
			restore(svc("default/z"), "172.31.1.1"),
			alloc(svc("default/a"), "172.31.1.2"),
		},
	}, {
		name:  "an address held outside any pool is never handed out when a pool grows over it",
		pools: []Pool{pool("lab-a", "172.31.0.10-172.31.0.11")},
		steps: []step{
			restore(svc("default/old"), "172.31.0.12"),
			alloc(svc("default/a"), "172.31.0.10"),
			setPools(pool("lab-a", "172.31.0.10-172.31.0.13")),
			alloc(svc("default/b"), "172.31.0.11"),
			alloc(svc("default/c"), "172.31.0.13"),
		},
	}, {
		name:  "an address held from an older pool is not handed out by the pool that took its place",
		pools: []Pool{created(pool("lab-a", "172.31.0.10-172.31.0.11"), 1), created(pool("lab-b", "172.31.0.10-172.31.0.13"), 2)},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			setPools(created(pool("lab-b", "172.31.0.10-172.31.0.13"), 2)),
			alloc(svc("default/b"), "172.31.0.11"),
			alloc(svc("default/c"), "172.31.0.12"),
			counts("lab-b", IPv4, "4", "3", "1"),
		},
	}, {
		name:  "the cursor of an unchanged range survives a pool update",
		pools: []Pool{pool("lab-a", "172.31.0.10-172.31.0.13")},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			release("default/a", "172.31.0.10"),
			setPools(pool("lab-a", "172.31.0.10-172.31.0.13"), pool("lab-b", v4b)),
			alloc(svc("default/b"), "172.31.0.11"),
		},
	}, {
		name:  "an IPv6 /64 hands out addresses from its start",
		pools: []Pool{pool("lab-6", "fd31:0:0:1::/64")},
		steps: []step{
			alloc(svc("default/a", stack(SingleStack, IPv6)), "fd31:0:0:1::"),
			alloc(svc("default/b", stack(SingleStack, IPv6)), "fd31:0:0:1::1"),
			counts("lab-6", IPv6, "18446744073709551616", "2", "18446744073709551614"),
		},
	}, {
		name:  "ranges are used in order within a pool",
		pools: []Pool{pool("lab-a", "172.31.0.20", "172.31.0.10")},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			alloc(svc("default/b"), "172.31.0.20"),
		},
	}})
}

// TestAllocate_FullPoolHandsOutExactlyTheFreedAddresses fills a pool, frees scattered addresses
// and checks that exactly those come back, each once.
func TestAllocate_FullPoolHandsOutExactlyTheFreedAddresses(t *testing.T) {
	a := New()
	a.SetPools([]Pool{avoidBuggy(pool("lab-a", "172.31.0.0/20"))})
	const n = 4096 - 32 // .0 and .255 of 16 /24s
	for i := 0; i < n; i++ {
		if _, err := a.Allocate(svc(fmt.Sprintf("default/s%d", i))); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if _, err := a.Allocate(svc("default/extra")); err == nil {
		t.Fatal("allocation in a full pool succeeded")
	}
	freed := map[netip.Addr]bool{}
	for i := 7; i < n; i += 97 {
		for _, addr := range a.Release(fmt.Sprintf("default/s%d", i)) {
			freed[addr] = true
		}
	}
	for i := range len(freed) {
		res, err := a.Allocate(svc(fmt.Sprintf("default/again%d", i)))
		if err != nil {
			t.Fatalf("re-allocation %d: %v", i, err)
		}
		if !freed[res.Addrs[0]] {
			t.Fatalf("re-allocation %d got %s, which was not freed (or was handed out twice)", i, res.Addrs[0])
		}
		delete(freed, res.Addrs[0])
	}
	if _, err := a.Allocate(svc("default/extra")); err == nil {
		t.Fatal("allocation in a full pool succeeded")
	}
	st, _ := a.PoolStatus("lab-a")
	if st.Allocated[IPv4] != fmt.Sprint(n) || st.Available[IPv4] != "0" {
		t.Errorf("status = %+v, want %d allocated, 0 available", st, n)
	}
}

func TestPoolStatus_Counts(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a /28 counts its addresses",
		pools: []Pool{pool("lab-a", "172.31.0.0/28")},
		steps: []step{
			counts("lab-a", IPv4, "16", "0", "16"),
			alloc(svc("default/a"), "172.31.0.0"),
			alloc(svc("default/b"), "172.31.0.1"),
			counts("lab-a", IPv4, "16", "2", "14"),
		},
	}, {
		name:  "avoidBuggyIPs leaves .0 and .255 out of the capacity",
		pools: []Pool{avoidBuggy(pool("lab-a", "172.31.0.0/23", "172.31.4.255-172.31.5.0"))},
		steps: []step{
			counts("lab-a", IPv4, "508", "0", "508"),
			restore(svc("default/old"), "172.31.0.255"),
			counts("lab-a", IPv4, "508", "0", "508"),
		},
	}, {
		name:  "a /64 reports 2^64",
		pools: []Pool{pool("lab-6", "fd31::/64")},
		steps: []step{counts("lab-6", IPv6, "18446744073709551616", "0", "18446744073709551616")},
	}, {
		name:  "the whole IPv6 space does not overflow",
		pools: []Pool{pool("lab-6", "::/0")},
		steps: []step{counts("lab-6", IPv6, "340282366920938463463374607431768211456", "0", "340282366920938463463374607431768211456")},
	}, {
		name:  "counts follow the pool's ranges when it changes",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/a"), "172.31.0.10"),
			alloc(svc("default/b"), "172.31.0.11"),
			alloc(svc("default/c"), "172.31.0.12"),
			setPools(pool("lab-a", "172.31.0.11-172.31.0.30")),
			counts("lab-a", IPv4, "20", "2", "18"),
			setPools(pool("lab-a", "172.31.0.0/24")),
			counts("lab-a", IPv4, "256", "3", "253"),
		},
	}, {
		name: "a pool in conflict names the older pools and counts what lies in its ranges",
		pools: []Pool{
			created(pool("lab-a", "172.31.0.10-172.31.0.14"), 1),
			created(pool("lab-b", "172.31.0.12-172.31.0.19"), 2),
			created(pool("lab-c", "172.31.0.18-172.31.0.25"), 3),
		},
		steps: []step{
			alloc(svc("default/a", ips("172.31.0.13")), "172.31.0.13"),
			counts("lab-b", IPv4, "8", "1", "7"),
			step{"conflicts", func(t *testing.T, a *Allocator) {
				for name, want := range map[string][]string{"lab-a": nil, "lab-b": {"lab-a"}, "lab-c": {"lab-b"}} {
					st, _ := a.PoolStatus(name)
					if !slices.Equal(st.ConflictsWith, want) {
						t.Errorf("%s conflicts with %v, want %v", name, st.ConflictsWith, want)
					}
				}
			}},
		},
	}, {
		name:  "only the families a pool has are reported",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{step{"families", func(t *testing.T, a *Allocator) {
			st, _ := a.PoolStatus("lab-a")
			if _, ok := st.Capacity[IPv6]; ok || len(st.Capacity) != 1 || len(st.Allocated) != 1 || len(st.Available) != 1 {
				t.Errorf("status = %+v, want IPv4 only", st)
			}
			if _, ok := a.PoolStatus("lab-x"); ok {
				t.Error("PoolStatus of an unknown pool is ok")
			}
		}}},
	}})
}

func TestRestore_FollowsSharingRules(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a restored address is kept by the next Allocate and never handed to another",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			restore(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/other"), "172.31.0.11"),
			alloc(svc("default/web"), "172.31.0.10"),
			counts("lab-a", IPv4, "10", "2", "8"),
		},
	}, {
		name:  "the second Service restoring an address it may not share fails",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			restore(svc("default/old"), "172.31.0.10"),
			restoreFails(svc("default/new"), ReasonInUse, msg("172.31.0.10 is already held by default/old"), "172.31.0.10"),
			restoreFails(svc("default/new", key("k")), ReasonInUse, msg("default/old"), "172.31.0.10"),
			holding("default/new"),
		},
	}, {
		name:  "a port clash under one key fails with AddressInUse",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			restore(svc("default/old", key("k"), withPorts("TCP/80")), "172.31.0.10"),
			restoreFails(svc("default/new", key("k"), withPorts("TCP/80")), ReasonInUse, msg("default/old"), "172.31.0.10"),
		},
	}, {
		name:  "compatible Services restore one shared address",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			restore(svc("default/http", key("web"), withPorts("TCP/80")), "172.31.0.10"),
			restore(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
			counts("lab-a", IPv4, "10", "1", "9"),
			alloc(svc("default/https", key("web"), withPorts("TCP/443")), "172.31.0.10"),
		},
	}, {
		name:  "an address outside every pool is restored and kept with a warning",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			restore(svc("default/web", stack(RequireDualStack, IPv6, IPv4)), "172.31.9.9", "fd31:9::9"),
			holding("default/web", "fd31:9::9", "172.31.9.9"),
			allocWarns(svc("default/web", stack(RequireDualStack, IPv6, IPv4)), "", "no longer in any pool", "fd31:9::9", "172.31.9.9"),
		},
	}, {
		name:  "two restored addresses of one family are rejected",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{restoreFails(svc("default/web"), ReasonInvalidRequest, msg("two IPv4 addresses"), "172.31.0.10", "172.31.0.11")},
	}})
}

func TestPoolOf_FindsTheUsablePool(t *testing.T) {
	a := New()
	a.SetPools([]Pool{
		created(pool("lab-a", v4a), 1),
		created(pool("lab-b", "172.31.0.15-172.31.0.25", v6b), 2),
		created(internalPool("lab-c", v4b), 3),
	})
	for addr, want := range map[string]string{
		"172.31.0.10":          "lab-a",
		"172.31.0.19":          "lab-a",
		"172.31.0.22":          "", // only in lab-b, which is in conflict
		"172.31.1.12":          "lab-c",
		"::ffff:172.31.1.12":   "lab-c",
		"172.31.0.9":           "",
		"fd31::1:15":           "",
		"fd31::5":              "",
		"172.31.255.255":       "",
		"ffff:ffff:ffff::ffff": "",
	} {
		got, ok := a.PoolOf(netip.MustParseAddr(addr))
		if got != want || ok != (want != "") {
			t.Errorf("PoolOf(%s) = %q, %v; want %q", addr, got, ok, want)
		}
	}
}

func TestAllocator_IsSafeForConcurrentUse(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool("lab-a", "172.31.0.0/22")})
	var wg sync.WaitGroup
	results := make([][]netip.Addr, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				name := fmt.Sprintf("default/w%d-%d", w, i)
				res, err := a.Allocate(svc(name))
				if err != nil {
					t.Error(err)
					return
				}
				results[w] = append(results[w], res.Addrs...)
				if i%3 == 0 {
					a.SetPools([]Pool{pool("lab-a", "172.31.0.0/22")})
					_, _ = a.PoolStatus("lab-a")
				}
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, rs := range results {
		for _, addr := range rs {
			if seen[addr] {
				t.Fatalf("%s handed out twice", addr)
			}
			seen[addr] = true
		}
	}
	counts("lab-a", IPv4, "1024", "800", "224").run(t, a)
}
