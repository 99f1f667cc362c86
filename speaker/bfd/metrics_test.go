package bfd

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2/ktesting"
)

func TestMux_RegisterMetricsExportsTheSpeakersBFDNames(t *testing.T) {
	m := NewMux(ktesting.NewLogger(t, ktesting.NewConfig()))
	defer m.Close()
	reg := prometheus.NewRegistry()
	if err := m.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	var names []string
	ch := make(chan *prometheus.Desc, 8)
	for _, c := range m.metrics.collectors() {
		c.Describe(ch)
		names = append(names, (<-ch).String())
	}
	for _, want := range []string{
		`"ironlb_speaker_bfd_session_up"`, `variableLabels: {peer}`,
		`"ironlb_speaker_bfd_state_changes_total"`, `variableLabels: {peer,state}`,
		`"ironlb_speaker_bfd_packets_dropped_total"`,
	} {
		if !strings.Contains(strings.Join(names, "\n"), want) {
			t.Errorf("metrics %v lack %s", names, want)
		}
	}
	if err := m.RegisterMetrics(reg); err == nil {
		t.Errorf("registering twice: no error")
	}
}
