package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/internal/testenv"
)

var (
	crds          = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	servingHealth = regexp.MustCompile(`"Serving" what="health" address="([^"]+)"`)
)

// probe answers a GET of path on the ccm's health address: the status code and the body.
func (c *ccm) probe(t *testing.T, path string) (int, string) {
	t.Helper()
	m := servingHealth.FindStringSubmatch(c.Log())
	if m == nil {
		return 0, "ironlb-ccm has logged no health address yet"
	}
	resp, err := http.Get("http://" + m[1] + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A leading ironlb-ccm whose caches cannot sync (the IPPool CRD is missing) is live but not
// ready, and says why; it becomes ready, and serves Services, once the CRD is there.
func TestReadinessWaitsForTheCachesOfTheLeader(t *testing.T) {
	e := newEnv(t)
	const ippools = "ippools.ironlb.io"
	if err := e.dyn.Resource(crds).Delete(e.ctx, ippools, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the IPPool CRD to be gone", func() (bool, string) {
		_, err := e.dyn.Resource(crds).Get(e.ctx, ippools, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "still there"
	})
	c := e.startCCM("ccm", "--health-probe-bind-address=127.0.0.1:0")

	e.eventually("/readyz to say the leader waits for its caches", func() (bool, string) {
		code, body := c.probe(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "services: this replica leads: waiting for the informers to sync"),
			body
	})
	if code, body := c.probe(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while waiting for the caches: %d %s; want 200: waiting is not stuck", code, body)
	}
	if code, body := c.probe(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz still waiting for the caches: %d %s; want 503", code, body)
	}

	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "crds", "ironlb.io_ippools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &crd.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dyn.Resource(crds).Create(e.ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitEstablished(e.ctx, e.dyn, ippools); err != nil {
		t.Fatal(err)
	}
	e.eventually("/readyz to answer 200 once the caches synced", func() (bool, string) {
		code, body := c.probe(t, "/readyz")
		return code == http.StatusOK, body
	})
	e.pool("default", spec("172.31.140.0/30"))
	e.service("web")
	e.waitAllocated("web", 1)
	if code, body := c.probe(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz serving: %d %s; want 200", code, body)
	}
}
