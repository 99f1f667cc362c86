package clusterkey

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

const ns = "ironlb-system"

func runKeeper(t *testing.T, objs ...*v1.Secret) (*fake.Clientset, *record.FakeRecorder) {
	t.Helper()
	client := fake.NewClientset()
	for _, o := range objs {
		if _, err := client.CoreV1().Secrets(o.Namespace).Create(t.Context(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec := record.NewFakeRecorder(10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { NewKeeper(client, ns, rec).Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return client, rec
}

func waitSecret(t *testing.T, client *fake.Clientset, ok func(*v1.Secret) bool) *v1.Secret {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s, err := client.CoreV1().Secrets(ns).Get(t.Context(), SecretName, metav1.GetOptions{}); err == nil && ok(s) {
			return s
		}
	}
	t.Fatalf("no Secret %s/%s as wanted", ns, SecretName)
	return nil
}

func event(t *testing.T, rec *record.FakeRecorder) string {
	t.Helper()
	select {
	case e := <-rec.Events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return ""
	}
}

func TestKeeper_CreatesAMissingSecretAndAgainAfterDeletion(t *testing.T) {
	client, rec := runKeeper(t)
	first := waitSecret(t, client, func(*v1.Secret) bool { return true })
	if k, err := FromSecret(first); err != nil || len(k.Accept) != 1 {
		t.Fatalf("created Secret: keys %+v, %v", k, err)
	}
	if e := event(t, rec); !strings.HasPrefix(e, "Normal "+ReasonCreated) {
		t.Errorf("event %q, want Normal %s", e, ReasonCreated)
	}

	if err := client.CoreV1().Secrets(ns).Delete(t.Context(), SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	second := waitSecret(t, client, func(s *v1.Secret) bool { return !bytes.Equal(s.Data[DataKey], first.Data[DataKey]) })
	if _, err := FromSecret(second); err != nil {
		t.Fatal(err)
	}
}

func TestKeeper_LeavesAnUnusableSecretAloneAndSaysSo(t *testing.T) {
	short := &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: ns, ResourceVersion: "1"},
		Data:       map[string][]byte{DataKey: []byte("short")},
	}
	client, rec := runKeeper(t, short)
	e := event(t, rec)
	for _, want := range []string{"Warning " + ReasonInvalid, ns + "/" + SecretName, `"key" holds 5 bytes`, "leaves it alone"} {
		if !strings.Contains(e, want) {
			t.Errorf("event %q does not say %q", e, want)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if got := waitSecret(t, client, func(*v1.Secret) bool { return true }); string(got.Data[DataKey]) != "short" {
		t.Errorf("the Keeper changed the Secret: key %q", got.Data[DataKey])
	}
	writes := 0
	for _, a := range client.Actions() {
		if v := a.GetVerb(); a.GetResource().Resource == "secrets" && v != "list" && v != "watch" && v != "get" {
			writes++
		}
	}
	if writes != 1 { // the test's own create
		t.Errorf("%d writes to Secrets, want only the test's own create: %v", writes, client.Actions())
	}
}
