// Package ipam decides which addresses LoadBalancer Services get. It is pure: pools and requests
// in, decisions out. It knows nothing of the Kubernetes API; the provider translates IPPool
// objects and Services into the values here and writes the results back.
package ipam

import (
	"net/netip"

	"go4.org/netipx"
	"k8s.io/apimachinery/pkg/labels"
)

// Family is an IP address family.
type Family string

const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// FamilyOf returns the family of a.
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Policy mirrors a Service's spec.ipFamilyPolicy.
type Policy string

const (
	SingleStack      Policy = "SingleStack"
	PreferDualStack  Policy = "PreferDualStack"
	RequireDualStack Policy = "RequireDualStack"
)

// Visibility says which Services may take addresses from a pool.
type Visibility string

const (
	External Visibility = "External"
	Internal Visibility = "Internal"
)

// Pool is an IPPool as the allocator sees it.
type Pool struct {
	Name string
	// Ranges are the pool's addresses; CIDRs are converted to ranges by the caller.
	Ranges        []netipx.IPRange
	Visibility    Visibility
	AutoAssign    bool
	AvoidBuggyIPs bool // never hand out IPv4 addresses ending in .0 or .255
	// Reserved is true when the pool has a serviceAllocation: it then serves only Services that
	// match both selectors, and among matching reserved pools the lowest Priority wins.
	Reserved          bool
	Priority          int
	NamespaceSelector labels.Selector // nil matches everything
	ServiceSelector   labels.Selector // nil matches everything
	// Created orders pools for conflict resolution: when two pools overlap, the older one (then
	// the one whose name sorts first) stays usable and the other is in Conflict.
	CreatedUnix int64
	// Deleting is true while the IPPool is being deleted. Such a pool hands out nothing and is in
	// conflict with no pool, so a pool that takes over its ranges is usable at once; the Services
	// that hold its addresses keep them (PoolUsers says which, so that it is kept until then).
	Deleting bool
}

// Port is one (protocol, port) pair a Service exposes.
type Port struct {
	Protocol string // TCP, UDP, SCTP
	Port     int32
}

// Request is what a Service asks for.
type Request struct {
	Service         string // namespace/name, the identity of the holder
	Namespace       string
	ServiceLabels   map[string]string
	NamespaceLabels map[string]string
	Families        []Family // spec.ipFamilies, in order
	Policy          Policy
	IPs             []netip.Addr // requested addresses (ironlb.io/ips or spec.loadBalancerIP), at most one per family
	Pools           []string     // ironlb.io/pool; empty means any pool that auto-assigns
	Internal        bool
	SharingKey      string // ironlb.io/sharing-key; shared only within Namespace
	Ports           []Port
	// Prefer are addresses the Service held before it was deleted and created again (ironlb's
	// record of them, which backups and manifests carry). A Service that holds nothing gets them
	// back when they are free in a pool it may use; unlike IPs they are a wish, so when they
	// cannot be given the Service gets others and the Result says why (Unkept).
	Prefer []netip.Addr
	// Behind are the lines (pool and family) in which other Services have waited longer: no
	// fresh address of that family is taken from that pool for this Service, so a freed address
	// goes to the head of the line. Requested, shared and preferred addresses are not fresh.
	Behind []Line
	// From is the pool the Service's addresses were last announced with (ironlb's record of it,
	// ironlb.io/allocated-from). Only Restore reads it: for addresses that left every pool it is
	// the pool they stay with, and for an address still in that pool it tells a request changed
	// while no leader ran from a pool edited meanwhile.
	From string
}

// Line is where Services wait for a fresh address: one family of one pool.
type Line struct {
	Pool   string
	Family Family
}

// Result is what a Service holds after Allocate.
type Result struct {
	Addrs []netip.Addr // in the order of Request.Families
	// Pool is the pool whose settings announce the addresses: the one that holds them, or, for
	// addresses that left every usable pool, the pool they were last in (shrunk, in conflict,
	// being deleted or gone). Empty only for a restored Service with no record of its pool.
	Pool string
	// Warnings are problems that do not take the addresses away: an address that is no longer in
	// any usable pool after the pool was shrunk or deleted, or one that a pool edit left in a pool
	// the Service would not get it from now (another visibility, a pool it does not name).
	Warnings []string
	// Unkept are the preferred addresses (Request.Prefer) the Service did not get, and why.
	Unkept []Unkept
}

// Unkept is a preferred address the Service did not get.
type Unkept struct {
	Addr netip.Addr
	// Reason is ReasonInUse (another Service holds it), ReasonWrongFamily (the Service does not
	// use its family) or ReasonNotInPool (no pool the Service may use holds it).
	Reason Reason
	Holder string // the Service holding it, for ReasonInUse
}

// Reason classifies an allocation failure; the provider uses it as the condition reason.
type Reason string

const (
	ReasonInvalidRequest Reason = "InvalidRequest" // malformed or contradictory request
	ReasonNotInPool      Reason = "NotInPool"      // requested address in no pool the Service may use
	ReasonInUse          Reason = "AddressInUse"   // requested address held by another Service
	ReasonWrongFamily    Reason = "WrongFamily"    // requested address of a family the Service does not use
	ReasonUnknownPool    Reason = "UnknownPool"    // ironlb.io/pool names a pool that does not exist
	ReasonPoolExhausted  Reason = "PoolExhausted"  // no free address in any eligible pool
	ReasonSharingClash   Reason = "SharingConflict"
	ReasonNoInternalPool Reason = "NoInternalPool"
	ReasonNoPool         Reason = "NoEligiblePool" // no pool the Service may use exists
	ReasonDualStack      Reason = "DualStackUnavailable"
)

// Error is an allocation failure with a reason and a message meant for the Service's owner.
type Error struct {
	Reason  Reason
	Message string
	// Exhausted are the lines with no free address for the Service, for ReasonPoolExhausted:
	// where it waits.
	Exhausted []Line
	// Unkept are the preferred addresses the Service could not get (it got nothing at all).
	Unkept []Unkept
}

func (e *Error) Error() string { return e.Message }
