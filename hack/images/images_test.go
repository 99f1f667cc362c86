package main

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ironlb/ironlb/internal/ociimage"
)

// inputs are what the images were built from: the test checks the images against
// these, never against what it read from them.
type inputs struct {
	dir       string
	version   string
	commit    string
	registry  string
	platforms []v1.Platform
	created   time.Time // zero when not known to the test
	digests   map[string]v1.Hash
}

// imageInputs reads the images make images wrote when IRONLB_IMAGES names their
// directory (make test-images sets it, and IRONLB_IMAGES_{VERSION,COMMIT,REGISTRY,PLATFORMS}
// to what it built them from); otherwise it builds them into a temporary directory the
// way the command does.
func imageInputs(t *testing.T) inputs {
	if dir := os.Getenv("IRONLB_IMAGES"); dir != "" {
		in := inputs{
			dir:      dir,
			version:  os.Getenv("IRONLB_IMAGES_VERSION"),
			commit:   os.Getenv("IRONLB_IMAGES_COMMIT"),
			registry: os.Getenv("IRONLB_IMAGES_REGISTRY"),
		}
		if in.version == "" || in.commit == "" {
			t.Fatal("IRONLB_IMAGES is set: IRONLB_IMAGES_VERSION and IRONLB_IMAGES_COMMIT must say what the images were built from")
		}
		if in.registry == "" {
			in.registry = "ghcr.io/ironlb"
		}
		var err error
		if in.platforms, err = parsePlatforms(os.Getenv("IRONLB_IMAGES_PLATFORMS")); err != nil {
			t.Fatal(err)
		}
		return in
	}
	if testing.Short() {
		t.Skip("builds both binaries; set IRONLB_IMAGES to check images already built")
	}
	in := inputs{
		dir:       t.TempDir(),
		version:   "v9.8.7-test.1",
		commit:    "0123456789abcdef0123456789abcdef01234567",
		registry:  "registry.test:5000/ironlb-test",
		platforms: []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}},
		created:   time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC),
		digests:   map[string]v1.Hash{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	results, err := run(ctx, options{
		out: in.dir, version: in.version, commit: in.commit, registry: in.registry,
		platforms: in.platforms, created: in.created, goCmd: "go",
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		t.Logf("built %s %s %.1f MiB", r.Reference, r.Digest, float64(r.Size)/(1<<20))
		in.digests[r.Reference] = r.Digest
	}
	return in
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestImages checks each image as a user would meet it: loaded as a docker archive
// and as an OCI layout, its name, how it runs, its labels, its files, and the binary
// in it answering --version.
func TestImages(t *testing.T) {
	in := imageInputs(t)
	for _, b := range binaries {
		t.Run(b.name, func(t *testing.T) { checkImage(t, in, b.name) })
	}
}

func checkImage(t *testing.T, in inputs, bin string) {
	ref := in.registry + "/" + bin + ":" + in.version
	a, err := ociimage.Open(filepath.Join(in.dir, bin+".tar"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// Its names: docker load's tag, containerd's image name, skopeo's ref.
	if !slices.Equal(a.RepoTags, []string{ref}) {
		t.Errorf("manifest.json RepoTags %q, want [%q]", a.RepoTags, ref)
	}
	if got := a.Descriptor.Annotations["io.containerd.image.name"]; got != ref {
		t.Errorf("index.json io.containerd.image.name %q, want %q", got, ref)
	}
	if got := a.Descriptor.Annotations["org.opencontainers.image.ref.name"]; got != in.version {
		t.Errorf("index.json org.opencontainers.image.ref.name %q, want %q", got, in.version)
	}
	if want, ok := in.digests[ref]; ok && a.Descriptor.Digest != want {
		t.Errorf("index.json points at %s, the build printed %s", a.Descriptor.Digest, want)
	}

	// One image per platform asked for; the docker view is the host's (else the first).
	var got, want []string
	for _, p := range a.Platforms {
		got = append(got, p.String())
	}
	for _, p := range in.platforms {
		want = append(want, p.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("OCI view has platforms %q, want %q", got, want)
	}
	if len(in.platforms) > 1 && !a.Descriptor.MediaType.IsIndex() {
		t.Errorf("index.json points at a %s for %d platforms, want an index", a.Descriptor.MediaType, len(in.platforms))
	}
	dockerPlatform := 0
	for i, p := range in.platforms {
		if p.OS == runtime.GOOS && p.Architecture == runtime.GOARCH {
			dockerPlatform = i
			break
		}
	}
	dockerDigest, err := a.Docker.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ociDigest, err := a.Images[dockerPlatform].Digest()
	if err != nil {
		t.Fatal(err)
	}
	if dockerDigest != ociDigest {
		t.Errorf("docker view's manifest %s, OCI view's %s manifest %s: want one image", dockerDigest, in.platforms[dockerPlatform], ociDigest)
	}

	for i, img := range a.Images {
		p := in.platforms[i]
		t.Run(strings.ReplaceAll(p.String(), "/", "-"), func(t *testing.T) { checkPlatformImage(t, in, bin, p, img) })
	}
}

func checkPlatformImage(t *testing.T, in inputs, bin string, p v1.Platform, img v1.Image) {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant {
		t.Errorf("config platform %s/%s/%s, want %s", cf.OS, cf.Architecture, cf.Variant, p)
	}
	c := cf.Config
	if want := []string{"/" + bin}; !slices.Equal(c.Entrypoint, want) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want %q and no cmd", c.Entrypoint, c.Cmd, want)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", c.User)
	}
	if c.WorkingDir != "/" {
		t.Errorf("working dir %q, want /", c.WorkingDir)
	}
	if len(c.Env) != 0 {
		t.Errorf("env %q, want none", c.Env)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":    bin,
		"org.opencontainers.image.version":  in.version,
		"org.opencontainers.image.revision": in.commit,
		"org.opencontainers.image.source":   "https://github.com/ironlb/ironlb",
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	if !in.created.IsZero() {
		wantLabels["org.opencontainers.image.created"] = in.created.Format(time.RFC3339)
		if !cf.Created.Time.Equal(in.created) {
			t.Errorf("created %s, want %s", cf.Created.Time, in.created)
		}
	}
	for k, want := range wantLabels {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if c.Labels["org.opencontainers.image.description"] == "" {
		t.Error("no org.opencontainers.image.description label")
	}
	if created, err := time.Parse(time.RFC3339, c.Labels["org.opencontainers.image.created"]); err != nil || !created.Equal(cf.Created.Time) {
		t.Errorf("label org.opencontainers.image.created %q (%v), want the image's time %s", c.Labels["org.opencontainers.image.created"], err, cf.Created.Time)
	}

	// The files: exactly the binary and /tmp.
	entries, err := ociimage.LayerFiles(img)
	if err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(t.TempDir(), bin)
	var files []string
	for _, e := range entries {
		h := e.Header
		n := path.Clean("/" + h.Name)
		files = append(files, n)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", n, h.Uid, h.Gid)
		}
		switch n {
		case "/" + bin:
			if h.Typeflag != tar.TypeReg || h.Mode&0o7777 != 0o755 {
				t.Errorf("%s: type %q mode %o, want a file, mode 755", n, h.Typeflag, h.Mode)
			}
			if err := os.WriteFile(binary, e.Data, 0o755); err != nil {
				t.Fatal(err)
			}
		case "/tmp":
			if h.Typeflag != tar.TypeDir || h.Mode&0o7777 != 0o1777 {
				t.Errorf("%s: type %q mode %o, want a directory, mode 1777", n, h.Typeflag, h.Mode)
			}
		}
	}
	if want := []string{"/" + bin, "/tmp"}; !slices.Equal(files, want) {
		t.Fatalf("layer holds %q, want exactly %q", files, want)
	}

	// The binary runs and says which it is (on the host's platform only).
	if p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
		t.Logf("not running the %s binary on %s/%s", p, runtime.GOOS, runtime.GOARCH)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	line := strings.TrimSpace(string(out))
	prefix := bin + " " + in.version + " (commit " + in.commit + ", go"
	suffix := ", " + p.OS + "/" + p.Architecture + ")"
	if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, suffix) {
		t.Errorf("%s --version printed %q, want %q...%q", bin, line, prefix, suffix)
	}
	t.Logf("/%s --version: %s", bin, line)
}
