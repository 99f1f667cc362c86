// Package testenv runs a real etcd and kube-apiserver, built from the
// versions pinned in e2e/go.mod, for integration tests and the lab.
//
// The first use on a machine builds the binaries, which takes about ten
// minutes on 2 cores: run such tests with go test -timeout 30m.
package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// defaultServiceCIDRs are dual-stack and inside the lab ranges
// 172.31.0.0/16 and fd31::/48.
var defaultServiceCIDRs = []netip.Prefix{
	netip.MustParsePrefix("172.31.240.0/20"),
	netip.MustParsePrefix("fd31:0:0:ff00::/108"),
}

const (
	adminUser  = "ironlb-admin"
	pollPeriod = 100 * time.Millisecond
)

// Option changes how Start runs the control plane.
type Option func(*config)

type config struct {
	bins         *Bins
	address      netip.Addr
	serviceCIDRs []netip.Prefix
	extraArgs    []string
	startTimeout time.Duration
	detached     bool
	users        map[string][]string
}

// WithBinaries uses bins instead of calling Binaries.
func WithBinaries(bins Bins) Option {
	return func(c *config) { c.bins = &bins }
}

// WithAddress makes kube-apiserver bind to and advertise addr instead of
// 127.0.0.1, e.g. so that processes in lab network namespaces reach it.
func WithAddress(addr netip.Addr) Option {
	return func(c *config) { c.address = addr }
}

// WithServiceCIDRs sets --service-cluster-ip-range: one prefix, or one per
// IP family for dual-stack, the primary family first. The default is
// 172.31.240.0/20,fd31:0:0:ff00::/108.
func WithServiceCIDRs(prefixes ...netip.Prefix) Option {
	return func(c *config) { c.serviceCIDRs = slices.Clone(prefixes) }
}

// WithAPIServerArgs appends flags to kube-apiserver's command line; a flag
// given again overrides the default.
func WithAPIServerArgs(args ...string) Option {
	return func(c *config) { c.extraArgs = append(c.extraArgs, args...) }
}

// WithDetached lets etcd and kube-apiserver outlive this process (the lab
// starts them from a command that exits); Processes tells their ids.
func WithDetached() Option {
	return func(c *config) { c.detached = true }
}

// WithUser adds a user with a static token in the given groups, for a
// component that should run with its own identity; KubeconfigFor writes its
// kubeconfig.
func WithUser(name string, groups ...string) Option {
	return func(c *config) {
		if c.users == nil {
			c.users = map[string][]string{}
		}
		c.users[name] = groups
	}
}

// WithStartTimeout bounds how long Start waits for etcd and kube-apiserver to
// become ready (default 3 min: about 3 s on an idle machine, but over a minute
// when 2 cores also run a full test run's builds and labs). Building the
// binaries is not included.
func WithStartTimeout(d time.Duration) Option {
	return func(c *config) { c.startTimeout = d }
}

// APIServer is a running etcd and kube-apiserver.
type APIServer struct {
	dir          string
	ownDir       bool // Start created dir, so Stop removes it
	url          string
	token        string
	users        map[string]string // user name -> token
	caData       []byte
	kubeconfig   string
	serviceCIDRs []netip.Prefix
	etcd         *child
	apiserver    *child
	stopOnce     sync.Once
}

// StartAPIServer starts etcd and kube-apiserver in a temporary directory,
// building the binaries first if they are not cached, and stops them when
// the test ends. It fails the test if they do not come up.
func StartAPIServer(t testing.TB, opts ...Option) *APIServer {
	t.Helper()
	s, err := Start(t.Context(), "", opts...)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", s.apiserver.logPath, s.apiserver.tail(30))
		}
		s.Stop()
	})
	return s
}

// Start starts etcd and kube-apiserver with their state and logs in dir,
// replacing any state a previous Start left there. With dir == "" it uses a
// new temporary directory, which Stop removes. ctx bounds the start only;
// the processes run until Stop or until this process exits.
func Start(ctx context.Context, dir string, opts ...Option) (*APIServer, error) {
	cfg := config{
		address:      netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		serviceCIDRs: defaultServiceCIDRs,
		startTimeout: 3 * time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.address.IsValid() {
		return nil, errors.New("start control plane: invalid address")
	}
	if n := len(cfg.serviceCIDRs); n < 1 || n > 2 {
		return nil, fmt.Errorf("start control plane: want 1 or 2 service CIDRs, got %d", n)
	}
	if cfg.bins == nil {
		bins, err := Binaries(ctx)
		if err != nil {
			return nil, err
		}
		cfg.bins = &bins
	}

	ownDir := dir == ""
	if ownDir {
		var err error
		if dir, err = os.MkdirTemp("", "ironlb-testenv-"); err != nil {
			return nil, fmt.Errorf("start control plane: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}

	// A free port can be taken by someone else before the child binds it;
	// that is the only failure worth another try.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var s *APIServer
		s, err = startOnce(ctx, dir, cfg)
		if err == nil {
			s.ownDir = ownDir
			return s, nil
		}
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	if ownDir {
		os.RemoveAll(dir)
	}
	return nil, err
}

func startOnce(ctx context.Context, dir string, cfg config) (s *APIServer, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.startTimeout)
	defer cancel()

	etcdData, certDir := filepath.Join(dir, "etcd"), filepath.Join(dir, "pki")
	for _, d := range []string{etcdData, certDir} {
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("clean %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	tokens := fmt.Sprintf("%s,%s,%s,system:masters\n", token, adminUser, adminUser)
	users := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(cfg.users)) {
		t, err := randomToken()
		if err != nil {
			return nil, err
		}
		users[name] = t
		tokens += fmt.Sprintf("%s,%s,%s,%q\n", t, name, name, strings.Join(cfg.users[name], ","))
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	saKey := filepath.Join(dir, "service-account.key")
	if err := writeServiceAccountKey(saKey); err != nil {
		return nil, err
	}

	etcdPorts, err := freePorts("127.0.0.1", 2)
	if err != nil {
		return nil, err
	}
	apiPorts, err := freePorts(cfg.address.String(), 1)
	if err != nil {
		return nil, err
	}
	clientURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(etcdPorts[0]))
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(etcdPorts[1]))

	s = &APIServer{
		dir:          dir,
		url:          "https://" + net.JoinHostPort(cfg.address.String(), strconv.Itoa(apiPorts[0])),
		token:        token,
		users:        users,
		kubeconfig:   filepath.Join(dir, "kubeconfig"),
		serviceCIDRs: cfg.serviceCIDRs,
	}
	defer func() {
		if err != nil {
			s.stopChildren()
		}
	}()

	s.etcd, err = startChild("etcd", cfg.bins.Etcd, filepath.Join(dir, "etcd.log"), cfg.detached,
		"--name=testenv",
		"--data-dir="+etcdData,
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=testenv="+peerURL,
		// The data is thrown away after the run.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return s, err
	}
	if err := waitReady(ctx, s.etcd, http.DefaultClient, clientURL+"/health", "", `"health":"true"`); err != nil {
		return s, s.etcd.failure(err)
	}

	cidrs := make([]string, len(cfg.serviceCIDRs))
	for i, p := range cfg.serviceCIDRs {
		cidrs[i] = p.String()
	}
	args := append([]string{
		"--etcd-servers=" + clientURL,
		"--bind-address=" + cfg.address.String(),
		"--secure-port=" + strconv.Itoa(apiPorts[0]),
		"--advertise-address=" + cfg.address.String(),
		// Nothing runs behind the "kubernetes" Service in tests and the lab,
		// and v1.37 refuses a loopback advertise address otherwise.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + certDir,
		"--token-auth-file=" + tokenFile,
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + strings.Join(cidrs, ","),
	}, cfg.extraArgs...)
	// RBAC unless the extra flags choose (a list flag: given twice, it lists RBAC twice).
	if !slices.ContainsFunc(cfg.extraArgs, func(a string) bool { return strings.HasPrefix(a, "--authorization-mode=") }) {
		args = append(args, "--authorization-mode=RBAC")
	}
	s.apiserver, err = startChild("kube-apiserver", cfg.bins.KubeAPIServer, filepath.Join(dir, "kube-apiserver.log"), cfg.detached, args...)
	if err != nil {
		return s, err
	}

	// kube-apiserver writes its self-signed certificate to the cert dir
	// before it serves; until that file parses there is nothing to trust.
	certFile := s.CAPath()
	client := func() (*http.Client, error) {
		ca, err := os.ReadFile(certFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("no certificate in %s yet", certFile)
		}
		s.caData = ca
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
	}
	if err := waitReadyTLS(ctx, s.apiserver, client, s.url+"/readyz", token); err != nil {
		return s, s.apiserver.failure(err)
	}

	if err := s.writeKubeconfig(); err != nil {
		return s, err
	}
	return s, nil
}

// waitReadyTLS is waitReady with a client that exists only once the
// server's certificate does.
func waitReadyTLS(ctx context.Context, c *child, client func() (*http.Client, error), url, token string) error {
	hc, err := client()
	for i := 0; err != nil; i++ {
		if c.exited() {
			return fmt.Errorf("exited before serving: %w", err)
		}
		if i >= maxPolls(ctx) {
			return fmt.Errorf("no serving certificate: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no serving certificate: %w", err)
		case <-time.After(pollPeriod):
		}
		hc, err = client()
	}
	defer hc.CloseIdleConnections()
	return waitReady(ctx, c, hc, url, token, "ok")
}

// waitReady polls url until it answers 200 with a body containing want, the
// child exits, or ctx ends.
func waitReady(ctx context.Context, c *child, hc *http.Client, url, token, want string) error {
	var last error = errors.New("not polled")
	for i := 0; i <= maxPolls(ctx); i++ {
		if c.exited() {
			return fmt.Errorf("exited before ready: %w", last)
		}
		if last = probe(ctx, hc, url, token, want); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", last)
		case <-time.After(pollPeriod):
		}
	}
	return fmt.Errorf("not ready: %w", last)
}

// maxPolls bounds a polling loop by count as well as by ctx's deadline.
func maxPolls(ctx context.Context) int {
	deadline, ok := ctx.Deadline()
	if !ok {
		return int(time.Minute / pollPeriod)
	}
	return int(time.Until(deadline)/pollPeriod) + 1
}

func probe(ctx context.Context, hc *http.Client, url, token, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeServiceAccountKey writes a new P-256 key; kube-apiserver signs tokens
// with it and derives the verifying public key from the same file.
func writeServiceAccountKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func (s *APIServer) writeKubeconfig() error {
	return writeKubeconfig(s.kubeconfig, s.url, s.caData, adminUser, s.token)
}

func writeKubeconfig(path, url string, ca []byte, user, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["testenv"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: ca}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user}
	kc.CurrentContext = "testenv"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// KubeconfigFor writes a kubeconfig for a user added with WithUser to path.
func (s *APIServer) KubeconfigFor(user, path string) error {
	token, ok := s.users[user]
	if !ok {
		return fmt.Errorf("kubeconfig for %s: no such user (add it with WithUser)", user)
	}
	return writeKubeconfig(path, s.url, s.caData, user, token)
}

// CAPath is the file holding the certificate kube-apiserver serves.
func (s *APIServer) CAPath() string { return filepath.Join(s.dir, "pki", "apiserver.crt") }

// ServiceAccountKeyPath is the key kube-apiserver signs and verifies
// service account tokens with.
func (s *APIServer) ServiceAccountKeyPath() string {
	return filepath.Join(s.dir, "service-account.key")
}

// Processes are etcd and kube-apiserver.
func (s *APIServer) Processes() []*Process {
	return []*Process{{c: s.etcd}, {c: s.apiserver}}
}

// Config returns a new client config for a user in group system:masters.
func (s *APIServer) Config() *rest.Config {
	return &rest.Config{
		Host:            s.url,
		BearerToken:     s.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: bytes.Clone(s.caData)},
		// Tests create objects in bursts; client-side throttling would only
		// slow them down.
		QPS:   1000,
		Burst: 2000,
	}
}

// KubeconfigPath returns a kubeconfig file with the same credentials as
// Config, for child processes.
func (s *APIServer) KubeconfigPath() string { return s.kubeconfig }

// URL returns kube-apiserver's https URL.
func (s *APIServer) URL() string { return s.url }

// ServiceCIDRs returns the Service cluster IP ranges it was started with.
func (s *APIServer) ServiceCIDRs() []netip.Prefix { return slices.Clone(s.serviceCIDRs) }

// Stop kills kube-apiserver and etcd and, if Start created the directory,
// removes it. It is safe to call more than once.
func (s *APIServer) Stop() {
	s.stopOnce.Do(func() {
		s.stopChildren()
		if s.ownDir {
			os.RemoveAll(s.dir)
		}
	})
}

func (s *APIServer) stopChildren() {
	s.apiserver.stop()
	s.etcd.stop()
}
