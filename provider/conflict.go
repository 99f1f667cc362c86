package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Another controller may write status.loadBalancer of a Service ironlb handles: two load-balancer
// implementations for the same class, or one being replaced by the other. Overwriting it would
// make both rewrite the status in a loop, so ironlb stands back while the other writer is active
// and takes over once it has gone quiet. Who writes the field is read from the Service's
// managedFields; the API server keeps an entry there per field manager, with the fields it owns
// and when it last changed them. Other writers' Update operations (on the status subresource)
// and server-side applies both show there.
const (
	// ReasonConflictingController is the IPAllocated reason, and the Warning event, while another
	// field manager writes status.loadBalancer.
	ReasonConflictingController = "ConflictingController"

	// QuietPeriod is how long another writer must not have changed status.loadBalancer before
	// ironlb takes the field over again. A writer that has stopped keeps owning the field in
	// managedFields until someone else writes it, so silence is the only sign that it has gone.
	QuietPeriod = 30 * time.Second
	// MaxQuietPeriod bounds the quiet period, which doubles each time the same writer takes the
	// field back after ironlb took it over: a writer that only reacts to changes is quiet until
	// ironlb writes, and must not draw ironlb into a slow loop.
	MaxQuietPeriod = time.Hour
)

// A standoff is what ironlb remembers of a Service's last conflict: the other writer, and how
// many times ironlb took status.loadBalancer over from it.
type standoff struct {
	manager   string
	takeovers int
}

// quietPeriod is how long manager must have been silent before ironlb takes over again.
func (s standoff) quietPeriod(manager string) time.Duration {
	q := QuietPeriod
	if s.manager != manager {
		return q
	}
	for i := 0; i < s.takeovers && q < MaxQuietPeriod; i++ {
		q *= 2
	}
	return min(q, MaxQuietPeriod)
}

// next is the standoff after a sync that found other writing the Service ("" for nobody), when
// the Service's condition said a conflict before (wasConflict). Ending a conflict is a takeover.
func (s standoff) next(other string, wasConflict bool) standoff {
	switch {
	case other != "" && other != s.manager:
		return standoff{manager: other}
	case other == "" && wasConflict && s.manager != "":
		return standoff{manager: s.manager, takeovers: s.takeovers + 1}
	}
	return s
}

// conflictingWriter decides whether another controller writes the Service's status.loadBalancer.
// fields are the Service's managedFields. A field manager other than ironlb-ccm that owns
// status.loadBalancer.ingress conflicts until it has not changed the field for its quiet period
// (see standoff.quietPeriod); an entry that no longer owns the field does not. The speakers'
// manager owns only its own condition, so it never conflicts. It returns the manager that wrote
// last ("" when none conflicts) and when, if no one writes again, every conflict is over.
// An entry without a time cannot be shown to be quiet, so it conflicts.
func conflictingWriter(fields []metav1.ManagedFieldsEntry, now time.Time, prior standoff) (manager string, until time.Time) {
	var last time.Time
	for _, f := range fields {
		if f.Manager == v1alpha1.FieldManagerCCM || !ownsIngress(f.FieldsV1) {
			continue
		}
		wrote := now
		if f.Time != nil {
			wrote = f.Time.Time
		}
		end := wrote.Add(prior.quietPeriod(f.Manager))
		if !now.Before(end) {
			continue
		}
		if manager == "" || wrote.After(last) || (wrote.Equal(last) && f.Manager < manager) {
			manager, last = f.Manager, wrote
		}
		if end.After(until) {
			until = end
		}
	}
	return manager, until
}

// ownsIngress reports whether a managedFields entry owns status.loadBalancer.ingress.
func ownsIngress(f *metav1.FieldsV1) bool {
	if f == nil || !bytes.Contains(f.Raw, []byte(`"f:loadBalancer"`)) {
		return false
	}
	var owned struct {
		Status struct {
			LoadBalancer struct {
				Ingress json.RawMessage `json:"f:ingress"`
			} `json:"f:loadBalancer"`
		} `json:"f:status"`
	}
	return json.Unmarshal(f.Raw, &owned) == nil && owned.Status.LoadBalancer.Ingress != nil
}

// conflictCondition is the IPAllocated condition while other writes status.loadBalancer. held
// are the addresses ironlb keeps for the Service; own is the condition ironlb would set without
// the conflict, which says why it holds nothing, or what else is wrong.
func conflictCondition(prev *metav1.Condition, own metav1.Condition, held []netip.Addr, other string, quiet time.Duration) metav1.Condition {
	cond := own
	cond.Status, cond.Reason = metav1.ConditionFalse, ReasonConflictingController
	resume := fmt.Sprintf("when %s gives the field up or has not written it for %s", other, quiet)
	if len(held) > 0 {
		cond.Message = fmt.Sprintf("field manager %s writes status.loadBalancer; ironlb keeps %s reserved for this Service and publishes it %s",
			other, joinAddrs(held), resume)
		if own.Status != metav1.ConditionTrue {
			cond.Message += fmt.Sprintf(" (%s: %s)", own.Reason, own.Message)
		}
	} else {
		cond.Message = fmt.Sprintf("field manager %s writes status.loadBalancer; ironlb holds no address for this Service (%s: %s) and writes the field again %s",
			other, own.Reason, own.Message, resume)
	}
	cond.LastTransitionTime = metav1.Now()
	if prev != nil && prev.Status == cond.Status {
		cond.LastTransitionTime = prev.LastTransitionTime
	}
	return cond
}

// inConflict reports whether the condition says another writer holds status.loadBalancer.
func inConflict(c *metav1.Condition) bool {
	return c != nil && c.Reason == ReasonConflictingController
}
