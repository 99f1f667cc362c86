package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// holder is who a Service is for the purpose of sharing an address.
type holder struct {
	name       string // namespace/name
	namespace  string
	sharingKey string
	ports      []Port // compared by protocol(), so "tcp", "TCP" and "" are one protocol
}

func holderOf(req *Request) holder {
	return holder{name: req.Service, namespace: req.Namespace, sharingKey: req.SharingKey, ports: req.Ports}
}

func protocol(p string) string {
	if p == "" {
		return "TCP"
	}
	return strings.ToUpper(p)
}

// normalizedPorts copies ports so that the record does not alias the caller's request.
func normalizedPorts(in []Port) []Port {
	if len(in) == 0 {
		return nil
	}
	out := make([]Port, len(in))
	for i, p := range in {
		out[i] = Port{Protocol: protocol(p.Protocol), Port: p.Port}
	}
	return out
}

type groupKey struct{ namespace, sharingKey string }

func (h *holder) group() (groupKey, bool) {
	return groupKey{h.namespace, h.sharingKey}, h.sharingKey != ""
}

// sameGroup reports whether h and o agreed to share addresses; whether their ports allow it is
// clash's business.
func (h *holder) sameGroup(o *holder) bool {
	return h.sharingKey != "" && h.sharingKey == o.sharingKey && h.namespace == o.namespace
}

// clash returns a (protocol, port) pair both expose.
func (h *holder) clash(o *holder) (Port, bool) {
	for _, p := range h.ports {
		for _, q := range o.ports {
			if p.Port == q.Port && protocol(p.Protocol) == protocol(q.Protocol) {
				return Port{Protocol: protocol(p.Protocol), Port: p.Port}, true
			}
		}
	}
	return Port{}, false
}

// mayShare reports whether h may hold an address o holds too.
func (h *holder) mayShare(o *holder) bool {
	if !h.sameGroup(o) {
		return false
	}
	_, clash := h.clash(o)
	return !clash
}

// shareError explains why h may not take an address o holds. what names the address for the
// reader, e.g. "requested address 172.31.0.5".
func (h *holder) shareError(what string, o *holder) *Error {
	if h.sameGroup(o) {
		p, _ := h.clash(o)
		return errorf(ReasonSharingClash, "%s is shared under sharing key %q, but port %s/%d is already used on it by %s",
			what, h.sharingKey, p.Protocol, p.Port, o.name)
	}
	return errorf(ReasonInUse, "%s is already used by %s (addresses are shared only between Services in the same namespace with the same sharing key)",
		what, o.name)
}

// conflictOn returns the first holder of addr, other than self, that h may not share with.
func (a *Allocator) conflictOn(h *holder, self *svcState, addr netip.Addr) *svcState {
	hs := a.holders[addr]
	for i := range hs.len() {
		if o := hs.at(i); o != self && !h.mayShare(&o.holder) {
			return o
		}
	}
	return nil
}

// groupAddrs returns the addresses that other members of h's sharing group hold, sorted.
func (a *Allocator) groupAddrs(h *holder, self *svcState, buf []netip.Addr) []netip.Addr {
	key, ok := h.group()
	if !ok {
		return buf
	}
	for addr := range a.groups[key] {
		hs := a.holders[addr]
		for i := range hs.len() {
			if o := hs.at(i); o != self && h.sameGroup(&o.holder) {
				buf = append(buf, addr)
				break
			}
		}
	}
	sortAddrs(buf)
	return buf
}

func (a *Allocator) joinGroup(s *svcState) {
	key, ok := s.group()
	if !ok || len(s.addrs) == 0 {
		return
	}
	g := a.groups[key]
	if g == nil {
		g = make(map[netip.Addr]int)
		a.groups[key] = g
	}
	for _, addr := range s.addrs {
		g[addr]++
	}
}

func (a *Allocator) leaveGroup(s *svcState) {
	key, ok := s.group()
	if !ok {
		return
	}
	g := a.groups[key]
	for _, addr := range s.addrs {
		if g[addr] <= 1 {
			delete(g, addr)
		} else {
			g[addr]--
		}
	}
	if len(g) == 0 {
		delete(a.groups, key)
	}
}

func errorf(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
