package ociimage

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fakeBinary writes a small stand-in for a static binary, different per platform.
func fakeBinary(t *testing.T, p v1.Platform) Binary {
	path := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(path, []byte("\x7fELF fake binary for "+p.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return Binary{Platform: p, Path: path}
}

func spec(t *testing.T, platforms ...v1.Platform) Spec {
	s := Spec{
		Name:        "ironlb-test",
		Reference:   "registry.test/ironlb/ironlb-test:v1.2.3",
		Version:     "v1.2.3",
		Revision:    "abc123",
		Description: "a test",
		Created:     time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC),
	}
	for _, p := range platforms {
		s.Binaries = append(s.Binaries, fakeBinary(t, p))
	}
	return s
}

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
	armv7 = v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

func write(t *testing.T, s Spec) (Result, *Archive, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	res, err := Write(out, s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != res.Size {
		t.Errorf("result says %d bytes, file has %d", res.Size, len(b))
	}
	a, err := Open(out, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return res, a, b
}

// layerFiles are the layer's entries by name.
func layerFiles(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	files, err := LayerFiles(img)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*tar.Header{}
	for _, f := range files {
		byName[f.Header.Name] = f.Header
	}
	return byName
}

func TestOnePlatform(t *testing.T) {
	s := spec(t, amd64)
	res, a, _ := write(t, s)

	if !slices.Equal(a.RepoTags, []string{s.Reference}) {
		t.Errorf("RepoTags %q", a.RepoTags)
	}
	if a.Descriptor.Annotations[AnnotationImageName] != s.Reference || a.Descriptor.Annotations[AnnotationRefName] != "v1.2.3" {
		t.Errorf("annotations %v", a.Descriptor.Annotations)
	}
	if a.Descriptor.MediaType != types.DockerManifestSchema2 || a.Descriptor.Digest != res.Digest {
		t.Errorf("index.json points at %s %s, want the image manifest %s", a.Descriptor.MediaType, a.Descriptor.Digest, res.Digest)
	}
	if a.Descriptor.Platform == nil || a.Descriptor.Platform.String() != "linux/amd64" {
		t.Errorf("index.json descriptor platform %v", a.Descriptor.Platform)
	}
	if len(a.Images) != 1 || a.Platforms[0].String() != "linux/amd64" {
		t.Fatalf("OCI view %d images %v", len(a.Images), a.Platforms)
	}
	dd, _ := a.Docker.Digest()
	od, _ := a.Images[0].Digest()
	if dd != od || od != res.Digest {
		t.Errorf("docker view %s, OCI view %s, written %s: want one digest", dd, od, res.Digest)
	}

	cf, err := a.Images[0].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/ironlb-test"}) || cf.Config.User != "65532:65532" || cf.Config.WorkingDir != "/" {
		t.Errorf("config %+v", cf.Config)
	}
	if cf.Config.Labels["org.opencontainers.image.created"] != "2024-02-03T04:05:06Z" || !cf.Created.Time.Equal(s.Created) {
		t.Errorf("created %s, label %q", cf.Created, cf.Config.Labels["org.opencontainers.image.created"])
	}
	files := layerFiles(t, a.Images[0])
	if len(files) != 2 || files["ironlb-test"] == nil || files["tmp/"] == nil {
		t.Fatalf("layer files %v", files)
	}
	if h := files["ironlb-test"]; h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(s.Created) {
		t.Errorf("binary header %+v", h)
	}
	if h := files["tmp/"]; h.FileInfo().Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Errorf("/tmp mode %v", h.FileInfo().Mode())
	}
}

func TestReproducible(t *testing.T) {
	s := spec(t, amd64, arm64)
	r1, _, b1 := write(t, s)
	r2, _, b2 := write(t, s)
	if r1.Digest != r2.Digest || !bytes.Equal(b1, b2) {
		t.Errorf("same inputs, different archives: %s %s", r1.Digest, r2.Digest)
	}
	s.Created = time.Time{}
	r3, a3, _ := write(t, s)
	if r3.Digest == r1.Digest {
		t.Error("another time, same digest")
	}
	cf, err := a3.Docker.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) || cf.Config.Labels["org.opencontainers.image.created"] != "1970-01-01T00:00:00Z" {
		t.Errorf("no time given: created %s, want the Unix epoch", cf.Created)
	}
}

func TestSeveralPlatforms(t *testing.T) {
	s := spec(t, armv7, arm64, amd64)
	res, a, _ := write(t, s)
	if a.Descriptor.MediaType != types.DockerManifestList || a.Descriptor.Digest != res.Digest {
		t.Errorf("index.json points at %s %s, want the manifest list %s", a.Descriptor.MediaType, a.Descriptor.Digest, res.Digest)
	}
	if a.Descriptor.Annotations[AnnotationImageName] != s.Reference {
		t.Errorf("annotations %v", a.Descriptor.Annotations)
	}
	var got []string
	for i, p := range a.Platforms {
		got = append(got, p.String())
		cf, err := a.Images[i].ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Platform().String() != p.String() {
			t.Errorf("image for %s has config platform %s", p, cf.Platform())
		}
		f := layerFiles(t, a.Images[i])
		if f["ironlb-test"] == nil || f["ironlb-test"].Size != int64(len("\x7fELF fake binary for "+p.String())) {
			t.Errorf("%s: layer has the wrong binary", p)
		}
	}
	if want := []string{"linux/arm/v7", "linux/arm64", "linux/amd64"}; !slices.Equal(got, want) {
		t.Errorf("platforms %q, want %q", got, want)
	}
	// manifest.json lists the host's image when it is there, else the first.
	want := 0
	for i, p := range s.Binaries {
		if p.Platform.OS == runtime.GOOS && p.Platform.Architecture == runtime.GOARCH {
			want = i
		}
	}
	dd, _ := a.Docker.Digest()
	od, _ := a.Images[want].Digest()
	if dd != od || res.DockerPlatform.String() != s.Binaries[want].Platform.String() {
		t.Errorf("docker view %s (%s), want the %s image %s", dd, res.DockerPlatform, s.Binaries[want].Platform, od)
	}
}

func TestDockerHubName(t *testing.T) {
	s := spec(t, amd64)
	s.Reference = "ironlb/ironlb-test:dev"
	_, a, _ := write(t, s)
	if got := a.Descriptor.Annotations[AnnotationImageName]; got != "docker.io/ironlb/ironlb-test:dev" {
		t.Errorf("containerd name %q", got)
	}
	if !slices.Equal(a.RepoTags, []string{"ironlb/ironlb-test:dev"}) {
		t.Errorf("RepoTags %q", a.RepoTags)
	}
}

func TestRejects(t *testing.T) {
	for name, mod := range map[string]func(*Spec){
		"no tag":         func(s *Spec) { s.Reference = "registry.test/ironlb/x" },
		"digest":         func(s *Spec) { s.Reference = "registry.test/x@sha256:" + string(bytes.Repeat([]byte("a"), 64)) },
		"path in name":   func(s *Spec) { s.Name = "a/b" },
		"no binaries":    func(s *Spec) { s.Binaries = nil },
		"platform twice": func(s *Spec) { s.Binaries = append(s.Binaries, s.Binaries[0]) },
		"missing binary": func(s *Spec) { s.Binaries[0].Path = filepath.Join(t.TempDir(), "none") },
	} {
		t.Run(name, func(t *testing.T) {
			s := spec(t, amd64)
			mod(&s)
			if _, err := Write(filepath.Join(t.TempDir(), "x.tar"), s); err == nil {
				t.Error("no error")
			}
		})
	}
}
