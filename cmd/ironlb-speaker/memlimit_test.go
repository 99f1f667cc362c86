package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	const mi = 1 << 20
	for _, tc := range []struct {
		name, value, env string
		container        int64
		want             int64
		wantErr          bool
	}{
		{"auto follows the container's limit", "auto", "", 256 * mi, 192 * mi, false},
		{"auto without a container limit sets none", "auto", "", 0, -1, false},
		{"auto leaves GOMEMLIMIT to the runtime", "auto", "100MiB", 256 * mi, -1, false},
		{"none", "none", "", 256 * mi, -1, false},
		{"zero is none", "0", "", 256 * mi, -1, false},
		{"a quantity", "96Mi", "100MiB", 256 * mi, 96 * mi, false},
		{"decimal units", "100M", "", 0, 100_000_000, false},
		{"not a quantity", "lots", "", 0, 0, true},
		{"negative", "-5Mi", "", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := memoryLimit(tc.value, tc.env, tc.container)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("memoryLimit(%q, %q, %d) = %d, %v; want %d, error %t", tc.value, tc.env, tc.container, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestContainerMemory(t *testing.T) {
	for content, want := range map[string]int64{
		"max\n":                 0,
		"268435456\n":           268435456,
		"9223372036854771712\n": 0, // cgroup v1: no limit
		"":                      0,
		"garbage":               0,
	} {
		if got := containerMemory(content); got != want {
			t.Errorf("containerMemory(%q) = %d, want %d", content, got, want)
		}
	}
}
