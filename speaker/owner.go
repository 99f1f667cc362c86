package speaker

import (
	"maps"
	"time"

	"github.com/ironlb/ironlb/internal/rendezvous"
	"github.com/ironlb/ironlb/speaker/member"
)

// Which node answers an address, and when it may start: everything about it
// is in this file, in pure functions.
//
//  1. Who is alive (aliveNodes): the members the heartbeats show alive and
//     not isolated; in the fallback (the heartbeats reach nobody), the nodes
//     whose Lease is fresh.
//  2. Who owns an address (ownerOf): among the eligible live nodes, the one
//     recorded as answering it keeps it (no needless moves); otherwise the
//     rendezvous ranking picks one.
//  3. Whether this node may answer now (mayAnswer): only when its mode
//     allows it (membershipMode); a node that answers nothing while
//     connected says so (abstains), and the others count it out.

// mode is how this speaker knows who is alive, and so what it may answer.
type mode string

const (
	// modeHeartbeats: the heartbeats flow; owners come from them (and the
	// Leases of nodes cut off from them).
	modeHeartbeats mode = "heartbeats"
	// modeJoining: connected only recently, after a start or a cut (in
	// which it dropped what it answered), or catching up with the records
	// of owners written meanwhile. Its view of who is alive and who owns
	// what may be incomplete: it answers nothing, and says so in its
	// heartbeats (member.SetAbstain), so the others count it out and
	// answer its former addresses and any new one themselves.
	modeJoining mode = "joining"
	// modeSettling: it stopped saying that it abstains only recently, and
	// word of that may not have reached every member, which may still rank
	// a new address to another node: it keeps answering what it answers,
	// if it still owns it, and takes nothing new.
	modeSettling mode = "settling"
	// modeCutOff: this node hears no peer, or no peer hears it. Another
	// node may own any address now: it answers nothing.
	modeCutOff mode = "cut-off"
	// modeFallback: cut off for long enough that every other speaker
	// keeps its Lease fresh; who is alive comes from the Leases, and this
	// node answers what it owns again, more slowly but correctly.
	modeFallback mode = "fallback"
)

// timing are the delays of the mode changes.
type timing struct {
	// Settle is how long a node is joining after it connects, and then
	// settling: word of it crosses the membership within a Timeout.
	Settle time.Duration
	// FallbackAfter is how long a node is cut off before it keeps its Lease
	// fresh and asks the others to do the same.
	FallbackAfter time.Duration
	// LeaseDuration is how long a Lease stays fresh after its renewal; a
	// node in fallback waits that long for every Lease to be renewed before
	// it trusts the missing ones to mean dead nodes.
	LeaseDuration time.Duration
}

// membershipInputs is what this node's mode follows from.
type membershipInputs struct {
	View member.View
	// CutOffSince is when this node last became cut off (zero: it is not).
	CutOffSince time.Time
	// OthersHeard: another node's Lease says that it hears the heartbeats
	// (a fresh standby Lease). OthersInFallback: another node's Lease says
	// that it answers what the Leases give it.
	OthersHeard, OthersInFallback bool
	// LeasesLive: this node's own renewals come back to it through its
	// watch of the Leases (leases.live).
	LeasesLive bool
	// CatchUpUntil is until when this node catches up (catchingUp): the
	// moment it caught up, once it did.
	CatchUpUntil time.Time
}

// membershipMode is this node's mode at now. It also returns when the mode
// changes next without any event, so the caller can look again then (zero:
// not on its own).
//
// A cut-off node answers nothing for as long as any node hears the
// heartbeats: those nodes own every address among themselves, and took this
// node's within the timeout. Only when the heartbeats reach nobody (a
// firewall everywhere) do the Leases decide, after FallbackAfter and a Lease
// duration, time for every node to renew its Lease and see the others', and
// only while this node's own renewals come back to it through its watch of
// the Leases (LeasesLive): a node cut off from the API server too cannot
// know who else is alive, and answers nothing.
//
// A connected node is joining for a Settle after it connects (word of it
// reaches every member within a Timeout, and theirs it), and until
// CatchUpUntil (catchingUp: back from answering nothing, its caches may be
// behind); then settling for another Settle, while word that it no longer
// abstains crosses the membership. It also settles while another node's
// Lease says it is in the fallback: that node answers what the Leases give
// it until it sees a standby Lease, and taking its addresses before then
// would make two nodes answer (the heartbeats coming back after a fallback
// everywhere).
func membershipMode(in membershipInputs, now time.Time, t timing) (mode, time.Time) {
	if !in.View.Isolated {
		joined := in.View.ConnectedSince.Add(t.Settle)
		if in.CatchUpUntil.After(joined) {
			joined = in.CatchUpUntil
		}
		if now.Before(joined) {
			return modeJoining, joined
		}
		if settled := joined.Add(t.Settle); now.Before(settled) {
			return modeSettling, settled
		}
		if in.OthersInFallback {
			return modeSettling, time.Time{}
		}
		return modeHeartbeats, time.Time{}
	}
	if end := in.CutOffSince.Add(t.FallbackAfter + t.LeaseDuration); now.Before(end) {
		return modeCutOff, end
	}
	if in.OthersHeard || !in.LeasesLive {
		return modeCutOff, time.Time{}
	}
	return modeFallback, time.Time{}
}

// catchingUp is until when this node, back at returned from answering
// nothing, joins while its Services cache catches up with the API server
// (zero: it does not): it was cut off from the heartbeats, maybe from the API
// server too (a link down), and the records of owners it holds may predate
// its return, naming it for addresses the others took meanwhile. It joins
// until the cache moved past the resource version it had then (caughtUp:
// when this node saw it move; zero, not yet), at most maxWait. Meanwhile
// the others count it out, so its former addresses are answered.
func catchingUp(returned time.Time, maxWait time.Duration, caughtUp time.Time) time.Time {
	if returned.IsZero() {
		return time.Time{}
	}
	if !caughtUp.IsZero() && caughtUp.Before(returned.Add(maxWait)) {
		return caughtUp
	}
	return returned.Add(maxWait)
}

// renewsLease reports whether this node keeps its Lease fresh: while it is
// cut off for longer than FallbackAfter, and while any other node is.
func renewsLease(view member.View, cutOffSince, now time.Time, t timing, othersCutOff bool) bool {
	return othersCutOff || view.Isolated && !now.Before(cutOffSince.Add(t.FallbackAfter))
}

// leaseSays is what this node's Lease says of the heartbeats, in mode md
// after lastMode (the mode the last sync applied), renewing or not (renews:
// renewsLease). It says "fallback" from before this node answers by the
// Leases (it enters the fallback only after every node had a Lease duration
// to see it cut off) until the sync after the one that stopped it, so that
// the connected nodes take nothing of it while it may still answer.
func leaseSays(view member.View, md, lastMode mode, renews bool) string {
	switch {
	case md == modeFallback || lastMode == modeFallback:
		return heartbeatsFallback
	case !renews:
		return heartbeatsOK
	case view.Isolated:
		return heartbeatsCutOff
	default:
		return heartbeatsStandby
	}
}

// leaseState is what the Lease of another node says.
type leaseState struct {
	// Fresh: renewed within its duration, as seen on this node.
	Fresh bool
	// CutOff: the node said, when it renewed, that it is cut off from the
	// heartbeats; Fallback, that it is and answers what the Leases give it
	// (CutOff too); Standby, that it hears them (and renews because another
	// node is cut off).
	CutOff, Fallback, Standby bool
}

// aliveNodes are the nodes that may own addresses, as this node sees them in
// mode md. While the heartbeats decide, the members they show alive and not
// isolated: a member that says it is cut off answers nothing, so its
// addresses go to the others. In the fallback (the heartbeats reach nobody)
// the nodes whose Lease is fresh.
func aliveNodes(self string, md mode, view member.View, leases map[string]leaseState) map[string]bool {
	alive := map[string]bool{self: true}
	if md == modeFallback {
		for name, l := range leases {
			if l.Fresh {
				alive[name] = true
			}
		}
		return alive
	}
	for name, p := range view.Alive {
		if !p.Isolated {
			alive[name] = true
		}
	}
	return alive
}

// conditionWriters are the nodes among which the writer of a Service's
// condition is ranked when no node owns its addresses. While there are L2
// members they decide, among those alive: a speaker outside the membership
// hears no heartbeats, cannot tell who is alive, and never writes (it would
// write "no live speaker" over the members' condition). With no member at
// all, every node with a speaker (speakers) may write.
func conditionWriters(self string, view member.View, alive, speakers map[string]bool) map[string]bool {
	if view.Members == 0 {
		out := maps.Clone(speakers)
		if out == nil {
			out = map[string]bool{}
		}
		out[self] = true
		return out
	}
	if _, member := view.Alive[self]; !member {
		return map[string]bool{}
	}
	return alive
}

// ownerOf picks the owner of key among the eligible nodes: the owner the
// Announced condition records keeps it while eligible, so a node that comes
// back takes nothing back; otherwise the ranking decides. Both are read the
// same by every speaker, so any two that see the same records and the same
// live nodes agree, whatever each answers now. (A node's own answering is
// not a claim: while its record is still being written, a node that joins
// would rank the address to itself while this one kept it, and both would
// answer. The address moves once instead, and the record, once written,
// holds it.)
func ownerOf(key string, eligible map[string]bool, recorded string) string {
	if recorded != "" && eligible[recorded] {
		return recorded
	}
	return rank(key, eligible)
}

// mayAnswer reports whether this node answers an address it owns (owned),
// given its mode and whether it answers it already. A joining node answers
// nothing: the others count it out (abstains).
func mayAnswer(m mode, owned, answering bool) bool {
	switch m {
	case modeHeartbeats, modeFallback:
		return owned
	case modeSettling:
		return owned && answering
	default:
		return false
	}
}

// mayReply is the gate before every ARP or NDP reply, between plans: the
// process kept running (answerable: member.Members.Answerable); its Lease is
// not overdue while the fallback needs it (leaseOK: leases.fenced); and
// either the peers surely count it alive (heard: member.Members.Heard) or
// the Leases decide who owns what (viaLeases: modeFallback).
func mayReply(answerable, leaseOK, heard, viaLeases bool) bool {
	return answerable && leaseOK && (heard || viaLeases)
}

// rank picks the owner of key among nodes by rendezvous hashing: each node
// scores hash(node, key) and the highest wins. Every speaker gets the same
// answer from the same set; addresses spread evenly; and when a node comes or
// goes only the addresses it wins or held move.
func rank(key string, nodes map[string]bool) string {
	best, bestScore := "", uint64(0)
	for n, ok := range nodes {
		if !ok {
			continue
		}
		s := score(n, key)
		if best == "" || s > bestScore || s == bestScore && n < best {
			best, bestScore = n, s
		}
	}
	return best
}

func score(node, key string) uint64 { return rendezvous.Score(node, key) }

// abstains reports whether this node's heartbeats say that it answers for
// no address though it hears the others (member.SetAbstain).
func abstains(m mode) bool { return m == modeJoining }
