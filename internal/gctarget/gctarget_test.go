package gctarget

import "testing"

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value int
		given bool
		env   string
		want  int
		set   bool
	}{
		{"the default", Default, false, "", Default, true},
		{"GOGC wins over the default", Default, false, "200", 0, false},
		{"the flag wins over GOGC", 80, true, "200", 80, true},
		{"the flag turns collection off", -1, true, "", -1, true},
	} {
		if got, set := Percent(tc.value, tc.given, tc.env); got != tc.want || set != tc.set {
			t.Errorf("%s: Percent(%d, %t, %q) = %d, %t; want %d, %t", tc.name, tc.value, tc.given, tc.env, got, set, tc.want, tc.set)
		}
	}
}
