package pods

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

// heartbeatPort is the speakers' UDP port in deploy/default (--peer-port).
const heartbeatPort = 7947

// TestSpeakerPodWithPortTakenStaysNotReady: on a node where another process
// holds the speakers' heartbeat port, the speaker pod runs but the kubelet
// never marks it Ready (its readiness probe says why), kubectl get pods shows
// it 0/1, and a rollout of the DaemonSet stops there: at most one speaker is
// unavailable (maxUnavailable), and the rollout ends only once the port is
// free. The Service's addresses are answered throughout.
func TestSpeakerPodWithPortTakenStaysNotReady(t *testing.T) {
	f := framework.New(t)
	_, addrs := echoService(f, "held", 1, 2)
	f.Curl(f.ClientNS(), addrs[0], "endpoint=", 40)

	const victim = 2
	node := f.NodeName(victim)

	// A rollout: every speaker pod is replaced, one at a time.
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"lab.ironlb.io/restarted":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := f.Client.AppsV1().DaemonSets(lab.Namespace).Patch(f.Ctx, lab.SpeakerAccount, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := f.Client.AppsV1().DaemonSets(lab.Namespace).Get(f.Ctx, lab.SpeakerAccount, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	generation := ds.Generation

	// The port is taken the moment the victim's old speaker has let it go,
	// before the kubelet has started the new one (seconds later).
	var conn *net.UDPConn
	f.Eventually("take UDP "+fmt.Sprint(heartbeatPort)+" on "+node+" once its old speaker has left", 18000, 10*time.Millisecond, func() error {
		c, err := lab.ListenUDP(f.NodeNS(victim), netip.AddrPortFrom(f.NodeAddrs(victim)[0], heartbeatPort))
		conn = c
		return err
	})
	freed := false
	free := func() {
		if !freed {
			freed = true
			conn.Close()
		}
	}
	defer free()

	// The victim's new pod: Running, never Ready, with the reason in its events.
	var stuck corev1.Pod
	f.Eventually("the rollout reaches "+node+" and its new speaker pod runs", 360, 500*time.Millisecond, func() error {
		p, ok := speakerPods(f)[node]
		if !ok || p.Status.Phase != corev1.PodRunning || p.Annotations["lab.ironlb.io/restarted"] == "" {
			return fmt.Errorf("no new running speaker pod on %s yet", node)
		}
		stuck = p
		return nil
	})
	// The kubelet's event gives the status code; the speaker's log, the reason.
	f.Eventually("the kubelet reports "+stuck.Name+" not ready", 60, time.Second, func() error {
		events, err := f.Client.CoreV1().Events(lab.Namespace).List(f.Ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + stuck.Name})
		if err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == "Unhealthy" && strings.Contains(e.Message, "Readiness probe failed: HTTP probe failed with statuscode: 503") {
				t.Logf("event on %s: %s", stuck.Name, e.Message)
				return nil
			}
		}
		return fmt.Errorf("no Unhealthy event with a 503 on %s yet (%d events)", stuck.Name, len(events.Items))
	})
	f.Eventually("kubectl logs "+stuck.Name+" says why", 30, time.Second, func() error {
		out, err := kubectl(f, "logs", "-n", lab.Namespace, stuck.Name)
		if err != nil {
			return fmt.Errorf("kubectl logs: %v: %s", err, out)
		}
		if line := lineOf(out, "address already in use"); line != "" {
			t.Logf("$ kubectl logs %s: %s", stuck.Name, line)
			return nil
		}
		return fmt.Errorf("no bind error in the log of %s yet", stuck.Name)
	})

	// It stays so, and the rollout stays stopped, for as long as the port is taken.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		byNode := speakerPods(f)
		p := byNode[node]
		if p.Name != stuck.Name || ready(p) {
			t.Fatalf("the speaker pod on %s changed or became Ready while its port is taken: %s ready=%t", node, p.Name, ready(p))
		}
		unready := 0
		for _, q := range byNode {
			if !ready(q) {
				unready++
			}
		}
		if unready > 1 {
			t.Fatalf("%d speaker pods unavailable at once, more than the DaemonSet's maxUnavailable of 1", unready)
		}
		ds, err := f.Client.AppsV1().DaemonSets(lab.Namespace).Get(f.Ctx, lab.SpeakerAccount, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Status.ObservedGeneration >= generation && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled {
			t.Fatalf("the rollout completed although %s's speaker is not ready", node)
		}
		time.Sleep(time.Second)
	}
	out, err := kubectl(f, "get", "pods", "-n", lab.Namespace, "-o", "wide", "--field-selector", "spec.nodeName="+node)
	if err != nil {
		t.Fatalf("kubectl get pods: %v\n%s", err, out)
	}
	t.Logf("$ kubectl get pods -n %s -o wide --field-selector spec.nodeName=%s\n%s", lab.Namespace, node, out)
	if line := lineOf(out, stuck.Name); !strings.Contains(line, "0/1") || !strings.Contains(line, "Running") {
		t.Errorf("kubectl get pods does not show %s as Running 0/1: %q", stuck.Name, line)
	}
	status, err := kubectl(f, "rollout", "status", "daemonset/"+lab.SpeakerAccount, "-n", lab.Namespace, "--timeout=5s")
	if err == nil {
		t.Errorf("kubectl rollout status says the rollout is complete:\n%s", status)
	}
	for _, a := range addrs {
		f.Curl(f.ClientNS(), a, "endpoint=", 40)
	}

	// Freed, the same pod becomes Ready by itself and the rollout completes.
	free()
	if err := f.WaitRolledOut(f.Ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if p := speakerPods(f)[node]; p.Name != stuck.Name {
		t.Errorf("the speaker pod on %s was replaced (%s, was %s): want it to recover in place", node, p.Name, stuck.Name)
	}
	for _, a := range addrs {
		f.Curl(f.ClientNS(), a, "endpoint=", 40)
	}
	if out, err := kubectl(f, "rollout", "status", "daemonset/"+lab.SpeakerAccount, "-n", lab.Namespace, "--timeout=30s"); err != nil {
		t.Errorf("kubectl rollout status after the port was freed: %v\n%s", err, out)
	}
}

// lineOf is the line of out that names name.
func lineOf(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, name) {
			return l
		}
	}
	return ""
}
