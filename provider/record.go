package provider

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// Event and condition reasons about the record of a Service's addresses
// (ironlb.io/allocated-addresses).
const (
	// ReasonRecordedAddressTaken: the Service was created again, but another Service holds the
	// address it held before, so it got another one.
	ReasonRecordedAddressTaken = "RecordedAddressTaken"
	// EventRecordIgnored: the record names something that can never be given to the Service.
	EventRecordIgnored = "RecordIgnored"
)

// recordedAddrs reads ironlb's record of the addresses a Service held. The record is a wish,
// never a request: what cannot be read is returned in bad, to be reported and ignored.
func recordedAddrs(ann map[string]string) (addrs []netip.Addr, bad []string) {
	v, ok := ann[v1alpha1.AnnotationAllocatedAddresses]
	if !ok {
		return nil, nil
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			bad = append(bad, s)
			continue
		}
		addrs = append(addrs, a.Unmap())
	}
	return addrs, bad
}

// recordNotes says, one sentence each, which recorded addresses the Service did not get back
// and why. taken are the ones another Service holds; ignored the ones it could never get.
func recordNotes(unkept []ipam.Unkept, bad []string) (taken, ignored []string) {
	for _, s := range bad {
		ignored = append(ignored, fmt.Sprintf("recorded address %q in %s is not an IP address; ignored",
			s, v1alpha1.AnnotationAllocatedAddresses))
	}
	for _, u := range unkept {
		switch u.Reason {
		case ipam.ReasonInUse:
			taken = append(taken, fmt.Sprintf("recorded address %s is held by %s", u.Addr, u.Holder))
		case ipam.ReasonWrongFamily:
			ignored = append(ignored, fmt.Sprintf("recorded address %s in %s is %s, a family the Service does not use; ignored",
				u.Addr, v1alpha1.AnnotationAllocatedAddresses, ipam.FamilyOf(u.Addr)))
		default:
			ignored = append(ignored, fmt.Sprintf("recorded address %s in %s is in no pool this Service may use; ignored",
				u.Addr, v1alpha1.AnnotationAllocatedAddresses))
		}
	}
	return taken, ignored
}
