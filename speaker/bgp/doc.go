// Package bgp announces the node's service addresses to its routers by BGP.
//
// A Manager runs one GoBGP server in the process. The caller (the speaker's
// controller) says which sessions the node has (SetPeers) and which
// prefixes it announces to which of them (SetRoutes); the Manager changes
// only what differs, so that an unchanged session never flaps and an
// unchanged route is never sent again. Status and Changes report the
// sessions' states and, in words, why a session is not up.
//
// Sessions are always opened by the node unless Config.ListenPort is set.
// Every session offers IPv4 and IPv6 unicast; the router decides which are
// used, so an IPv4 session can carry IPv6 routes and vice versa. Routes
// the routers send are not accepted: the node only announces.
//
// GoBGP opens its sockets from its own goroutines, so the Manager must run
// in a process that lives in the node's network namespace (as the speaker
// does); the real-router test re-executes itself inside a namespace for
// that reason.
package bgp
