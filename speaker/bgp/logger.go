package bgp

import (
	"fmt"
	"slices"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"k8s.io/klog/v2"
)

// GoBGP's log levels map onto klog verbosity so that one -v flag governs the
// speaker: GoBGP's warnings (a NOTIFICATION, a closed connection) are things
// an operator wants by default, its informational lines (peer added, peer
// up/down) are routine, and its debug lines are per-message noise.
const (
	gobgpInfoV  = 2
	gobgpDebugV = 4
)

// gobgpLogger adapts GoBGP's logger interface to klog and lets the Manager
// see what GoBGP only tells its log: why a session failed (the NOTIFICATION
// sent or received, a refused or timed-out connection). GoBGP's API reports
// a session's state but not the reason, so the log is the one place to get
// it from.
type gobgpLogger struct {
	logger klog.Logger
	// observe, when set, sees every message before filtering by verbosity.
	observe func(msg string, fields gobgplog.Fields)
}

var _ gobgplog.Logger = (*gobgpLogger)(nil)

// Panic and Fatal log and panic. GoBGP calls them on internal invariants;
// its default logger would panic or exit the process. A library must not
// exit its host, and a panic keeps the stack trace.
func (l *gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	l.log(-1, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (l *gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.log(-1, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (l *gobgpLogger) Error(msg string, fields gobgplog.Fields) { l.log(-1, msg, fields) }
func (l *gobgpLogger) Warn(msg string, fields gobgplog.Fields)  { l.log(0, msg, fields) }
func (l *gobgpLogger) Info(msg string, fields gobgplog.Fields)  { l.log(gobgpInfoV, msg, fields) }
func (l *gobgpLogger) Debug(msg string, fields gobgplog.Fields) { l.log(gobgpDebugV, msg, fields) }

// SetLevel is ignored: klog's verbosity decides what is printed.
func (l *gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel always claims debug. GoBGP skips some debug calls unless the
// level allows them, among them "failed to connect", which carries the
// reason (connection refused, timeout) a session does not come up; the
// Manager needs that whatever klog prints.
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel { return gobgplog.DebugLevel }

// log writes at verbosity v, or as an error when v < 0.
func (l *gobgpLogger) log(v int, msg string, fields gobgplog.Fields) {
	if l.observe != nil {
		l.observe(msg, fields)
	}
	if v >= 0 && !l.logger.V(v).Enabled() {
		return
	}
	kv := fieldsToKV(fields)
	if v < 0 {
		l.logger.Error(nil, msg, kv...)
		return
	}
	l.logger.V(v).Info(msg, kv...)
}

// fieldsToKV turns GoBGP's fields into klog key/value pairs in key order,
// so that the same event always logs the same way. GoBGP names the peer
// address "Key"; it is logged as peerAddress.
func fieldsToKV(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kv := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		name := k
		switch k {
		case "Key":
			name = "peerAddress"
		case gobgplog.FieldFacility:
			name = "facility"
		}
		v := fields[k]
		if s, ok := v.(fmt.Stringer); ok {
			v = safeString(s)
		}
		kv = append(kv, name, v)
	}
	return kv
}

// safeString formats a Stringer that may be a nil pointer (GoBGP logs a
// nil state reason before the first transition).
func safeString(s fmt.Stringer) (out string) {
	defer func() {
		if recover() != nil {
			out = "<nil>"
		}
	}()
	return s.String()
}
