package integration

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Waiting Services get freed addresses in the order they started waiting, also across a
// restart of ironlb-ccm.
func TestWaitingServicesAreServedInTheOrderTheyStartedWaiting(t *testing.T) {
	e := newEnv(t)
	e.pool("tiny", spec("172.31.121.1-172.31.121.5"))
	first := e.startCCM("first")

	holders := e.served("holder", 0, 5)
	var waiters []string
	for i := 0; i < 5; i++ {
		// Names sort against the order of waiting, so that listing order cannot pass for it.
		key := fmt.Sprintf("waiter-%c", 'e'-i)
		e.service(key)
		e.waitFailed(key, "PoolExhausted")
		waiters = append(waiters, key)
		// Apart by more than the second a condition's transition time counts.
		time.Sleep(1100 * time.Millisecond)
	}

	free := func(i int) {
		t.Helper()
		addr := ingressIPs(e.get(holders[i]))[0]
		e.delete(holders[i])
		e.waitIPs(waiters[i], addr)
		for _, later := range waiters[i+1:] {
			if got := ingressIPs(e.get(later)); len(got) > 0 {
				t.Errorf("%s got %v before %s, which waited longer", later, got, waiters[i])
			}
		}
	}
	free(0)
	free(1)

	// The line survives a restart: the order comes back from the Services' conditions.
	first.Signal(syscall.SIGKILL)
	e.startCCM("second")
	for i := 2; i < 5; i++ {
		free(i)
	}
}
