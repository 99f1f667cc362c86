package rendezvous

import (
	"fmt"
	"testing"
)

// Scores are stable (the owner of an address must not change between
// releases, or every address would move on an upgrade) and spread: of 1,000
// keys over 10 names, each name wins about a tenth.
func TestScore(t *testing.T) {
	if got, want := Score("node1", "10.0.0.1"), Score("node1", "10.0.0.1"); got != want {
		t.Fatalf("Score is not deterministic: %d, %d", got, want)
	}
	if Score("a", "bc") == Score("ab", "c") {
		t.Fatalf("the separator does not separate")
	}
	wins := map[string]int{}
	for k := range 1000 {
		key := fmt.Sprintf("10.0.%d.%d", k/250, k%250)
		best, bestScore := "", uint64(0)
		for n := range 10 {
			name := fmt.Sprintf("worker-%03d.k8s.example.internal", n)
			if s := Score(name, key); best == "" || s > bestScore {
				best, bestScore = name, s
			}
		}
		wins[best]++
	}
	for name, w := range wins {
		if w < 60 || w > 140 {
			t.Errorf("%s wins %d of 1000 keys, want about 100", name, w)
		}
	}
	if len(wins) != 10 {
		t.Errorf("only %d of 10 names ever win", len(wins))
	}
}
