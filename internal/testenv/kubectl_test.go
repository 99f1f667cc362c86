package testenv

import "testing"

func TestSkewAllowed_KubectlWithinOneMinorOfTheAPIServer(t *testing.T) {
	for _, c := range []struct {
		client, server string
		want           bool
	}{
		{"v1.37.1", "v1.37.1", true},
		{"v1.36.0", "v1.37.1", true},
		{"v1.38.2", "v1.37.1", true},
		{"v1.35.9", "v1.37.1", false},
		{"v1.32.4-dispatcher", "v1.37.1", false},
		{"v1.36+", "v1.37.1", true},
		{"v2.37.0", "v1.37.1", false},
		{"", "v1.37.1", false},
	} {
		if got := skewAllowed(c.client, c.server); got != c.want {
			t.Errorf("skewAllowed(%q, %q) = %t, want %t", c.client, c.server, got, c.want)
		}
	}
}
