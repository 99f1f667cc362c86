package main

import (
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentile_MedianIsLowerMiddleAndP99BelowHundredValuesIsTheLargest(t *testing.T) {
	xs := []time.Duration{ms(1), ms(2), ms(3), ms(4)}
	if got := percentile(xs, 0.5); got != ms(2) {
		t.Errorf("median of 1..4 ms = %v, want 2ms", got)
	}
	if got := percentile(xs, 0.99); got != ms(4) {
		t.Errorf("p99 of 4 values = %v, want the largest, 4ms", got)
	}
	var hundred []time.Duration
	for i := range 100 {
		hundred = append(hundred, ms(i+1))
	}
	if got := percentile(hundred, 0.99); got != ms(99) {
		t.Errorf("p99 of 1..100 ms = %v, want 99ms", got)
	}
}

func TestDetector_TimesEachSurvivorOnceAndCountsOtherDeathsAsFalse(t *testing.T) {
	d := newDetector()
	d.arm("victim", []string{"a", "b"})
	at := d.killed
	d.dead("a", "victim", at.Add(ms(300)))
	d.dead("a", "victim", at.Add(ms(900))) // a second notice is not a second survivor
	d.dead("victim", "victim", at)         // the victim's own view does not count
	d.dead("c", "victim", at.Add(ms(50)))  // c counted it dead before the kill: no watcher
	d.dead("a", "b", at.Add(ms(10)))       // b was never killed
	d.dead("b", "victim", at.Add(ms(400)))
	got := d.collect(time.Second)
	if len(got) != 2 || got[0] != ms(300) || got[1] != ms(400) {
		t.Errorf("survivors' times = %v, want [300ms 400ms]", got)
	}
	if d.falseCount() != 1 {
		t.Errorf("false deaths = %d, want 1", d.falseCount())
	}
	d.dead("c", "victim", at.Add(ms(5000))) // late, after collect: neither timed nor false
	if d.falseCount() != 1 {
		t.Errorf("false deaths after late word = %d, want 1", d.falseCount())
	}
}

func TestDetector_SurvivorThatNeverSeesTheKillIsNever(t *testing.T) {
	d := newDetector()
	d.arm("victim", []string{"a", "b"})
	d.dead("a", "victim", d.killed.Add(ms(300)))
	got := d.collect(10 * time.Millisecond)
	if len(got) != 2 || got[1] != never || kill(got).every() != never || kill(got).median() != ms(300) {
		t.Errorf("survivors' times = %v, want [300ms never]", got)
	}
}
