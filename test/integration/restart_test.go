package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

func addresses(e *env, keys []string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = strings.Join(ingressIPs(e.get(k)), ",")
	}
	return out
}

// served creates the Services prefix-from … prefix-(to-1) and waits until each has an address.
func (e *env) served(prefix string, from, to int) []string {
	e.t.Helper()
	var keys []string
	for i := from; i < to; i++ {
		keys = append(keys, fmt.Sprintf("%s-%d", prefix, i))
		e.service(keys[len(keys)-1])
	}
	for _, k := range keys {
		e.waitAllocated(k, 1)
	}
	return keys
}

// checkKeptAndDistinct fails if a Service's address changed or two Services hold one address.
func checkKeptAndDistinct(t *testing.T, before, after map[string]string, when string) {
	t.Helper()
	for k, ip := range before {
		if after[k] != ip {
			t.Errorf("%s moved from %s to %s %s", k, ip, after[k], when)
		}
	}
	seen := map[string]string{}
	for k, ip := range after {
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both hold %s", k, other, ip)
		}
		seen[ip] = k
	}
}

func TestRestartWithPendingServicesAndEditedPoolsKeepsEveryAddress(t *testing.T) {
	e := newEnv(t)
	e.pool("small", spec("172.31.130.0/29"))
	first := e.startCCM("first")

	holders := e.served("holder", 0, 8)
	e.service("pending-1")
	e.waitFailed("pending-1", "PoolExhausted")
	before := addresses(e, holders)
	first.Signal(syscall.SIGKILL)

	// While ironlb-ccm is down: a pool is added whose addresses sort before the old ones, the
	// old pool loses half its addresses, more Services wait and one holder is deleted.
	e.pool("added", spec("172.31.129.0/30"))
	e.updatePool("small", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.130.0/30"} })
	e.service("pending-2")
	e.service("pending-3")
	e.delete("holder-0")
	holders = holders[1:]
	delete(before, "holder-0")

	e.startCCM("second")
	for _, k := range []string{"pending-1", "pending-2", "pending-3"} {
		e.waitAllocated(k, 1)
	}
	after := addresses(e, append(holders, "pending-1", "pending-2", "pending-3"))
	checkKeptAndDistinct(t, before, after, "across the restart")
}

func TestLeaderChangeBetweenTwoReplicasKeepsEveryAddress(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.131.0/28"))
	replicas := map[string]*ccm{"a": e.startCCM("replica-a"), "b": e.startCCM("replica-b")}

	keys := e.served("svc", 0, 6)
	before := addresses(e, keys)

	// Both replicas run on one host, so the lease identity does not tell them apart; the one
	// that acquired the lease says so in its log.
	var leader string
	e.eventually("a leader", func() (bool, string) {
		for name, r := range replicas {
			if strings.Contains(r.Log(), "Successfully acquired lease") {
				leader = name
				return true, ""
			}
		}
		return false, "no replica acquired the lease"
	})
	replicas[leader].Signal(syscall.SIGKILL)
	standby := replicas[map[string]string{"a": "b", "b": "a"}[leader]]
	e.eventually("the standby to take over", func() (bool, string) {
		return strings.Contains(standby.Log(), "Successfully acquired lease"), "standby has not acquired the lease"
	})
	keys = append(keys, e.served("svc", 6, 9)...)
	checkKeptAndDistinct(t, before, addresses(e, keys), "after the leader ("+leader+") was killed")
}
