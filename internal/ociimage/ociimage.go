// Package ociimage builds container images of ironlb's static Go binaries without a
// container engine, and writes each as one tar file that every usual loader takes.
//
// # The image
//
// An image is the empty base (FROM scratch) plus one layer: the binary at /<name>
// (mode 0755, owned by 0:0) and an empty /tmp (mode 1777, so that a read-only root
// filesystem with an emptyDir mounted there works). Its config runs /<name> as
// 65532:65532 (the distroless "nonroot" user) in /, sets no environment, and
// carries the org.opencontainers.image.* labels: title, description, version,
// revision, source, licenses and created. Nothing in it depends on when or where it
// was built: created is the time given (the commit's time) or else the Unix epoch,
// every file in the layer and in the archive has that time, and the layer's gzip
// stream is the standard library's, so the same binaries and inputs give the same
// digests and the same bytes.
//
// The manifest, config and layer use the Docker schema 2 media types (what `docker
// buildx build` pushes by default), not the OCI ones: a docker-save manifest.json
// cannot say which media types an image has, so readers of that view (docker load's
// classic store, go-containerregistry's tarball package) rebuild a Docker schema 2
// manifest. With Docker types that rebuilt manifest is byte for byte the one in the
// OCI view, and the image has one digest whichever way it is loaded. Every runtime
// and registry takes Docker schema 2 images.
//
// # The archive
//
// [Write] puts the image in one tar file that is at once
//
//   - an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>): index.json has
//     one descriptor, annotated with org.opencontainers.image.ref.name = the tag and
//     io.containerd.image.name = the full reference. containerd (`ctr images import`,
//     hence `kind load image-archive`), Docker with the containerd image store,
//     `podman load` and `skopeo copy oci-archive:` read this view;
//   - a docker-save archive: manifest.json with Config, RepoTags [the reference] and
//     Layers naming the same blobs/sha256/<hex> files. `docker load` with the classic
//     store reads this view.
//
// It is the layout `docker save` has written since Docker 25.
//
// # Several platforms
//
// Given binaries for more than one platform, index.json's one descriptor points at a
// Docker manifest list with one image per platform, so containerd (which reads
// index.json first and ignores manifest.json when oci-layout is present) imports them
// all and runs the node's own: `kind load image-archive` (ctr import --all-platforms)
// works on a cluster of any of those architectures. manifest.json can name one image per
// tag only, so it lists the image of the platform this program runs on (the first one
// given when that platform is not among them): `docker load` on the classic store gets
// the image it can run.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// Source is the org.opencontainers.image.source label.
	Source = "https://github.com/ironlb/ironlb"
	// Licenses is the org.opencontainers.image.licenses label.
	Licenses = "Apache-2.0"
	// User is the image's user: distroless's nonroot.
	User = "65532:65532"

	// AnnotationRefName is the OCI layout's tag annotation (the tag alone, for
	// `skopeo copy oci-archive:FILE:TAG`).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is containerd's: the full reference it imports the image as.
	AnnotationImageName = "io.containerd.image.name"
)

// Binary is one platform's static executable.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// Spec says which image to build.
type Spec struct {
	// Name is the binary's file name: the image runs /<Name>. It is also the title label.
	Name string
	// Reference is the tag to load the image as, e.g. ghcr.io/ironlb/ironlb-ccm:v0.1.0.
	Reference   string
	Version     string
	Revision    string
	Description string
	// Created is the image's time (the commit's); zero means the Unix epoch.
	Created time.Time
	// Binaries has one executable per platform, at least one.
	Binaries []Binary
}

// Result describes a written archive.
type Result struct {
	Path      string
	Reference string
	// Digest is what index.json's descriptor points at: the image manifest's digest
	// for one platform, the manifest list's for several. A registry shows the same
	// digest once the image is pushed as it is (crane push, skopeo copy).
	Digest    v1.Hash
	MediaType types.MediaType
	// Size is the archive's size in bytes.
	Size int64
	// Platforms are the images' platforms; DockerPlatform is the one manifest.json lists.
	Platforms      []v1.Platform
	DockerPlatform v1.Platform
}

func (s Spec) created() time.Time {
	if s.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return s.Created.UTC().Truncate(time.Second)
}

func (s Spec) validate() error {
	if s.Name == "" || strings.ContainsAny(s.Name, "/\\") || s.Name == "." || s.Name == ".." {
		return fmt.Errorf("binary name %q: want a plain file name", s.Name)
	}
	if len(s.Binaries) == 0 {
		return fmt.Errorf("%s: no binaries", s.Name)
	}
	seen := map[string]bool{}
	for _, b := range s.Binaries {
		p := b.Platform.String()
		if b.Platform.OS == "" || b.Platform.Architecture == "" {
			return fmt.Errorf("%s: platform %q: want os/arch", s.Name, p)
		}
		if seen[p] {
			return fmt.Errorf("%s: platform %s given twice", s.Name, p)
		}
		seen[p] = true
	}
	_, err := tag(s.Reference)
	return err
}

// tag parses a reference that must name its tag.
func tag(ref string) (name.Tag, error) {
	if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.Contains(last, ":") || strings.Contains(ref, "@") {
		return name.Tag{}, fmt.Errorf("reference %q: want <repository>:<tag>", ref)
	}
	t, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("reference %q: %w", ref, err)
	}
	return t, nil
}

// ImageName is a tag's full name as containerd records it (docker.io/library/x:y for x:y).
func ImageName(t name.Tag) string {
	registry := t.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

// Labels are the image's org.opencontainers.image.* labels.
func (s Spec) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       s.Name,
		"org.opencontainers.image.description": s.Description,
		"org.opencontainers.image.version":     s.Version,
		"org.opencontainers.image.revision":    s.Revision,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.licenses":    Licenses,
		"org.opencontainers.image.created":     s.created().Format(time.RFC3339),
	}
}

// Image builds one platform's image.
func Image(s Spec, b Binary) (v1.Image, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	created := s.created()
	layerTar, err := layerTar(s.Name, b.Path, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithMediaType(types.DockerLayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("%s layer: %w", s.Name, err)
	}

	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: b.Platform.Architecture,
		OS:           b.Platform.OS,
		OSVersion:    b.Platform.OSVersion,
		Variant:      b.Platform.Variant,
		OSFeatures:   b.Platform.OSFeatures,
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Entrypoint: []string{"/" + s.Name},
			User:       User,
			WorkingDir: "/",
			Labels:     s.Labels(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("COPY %s /%s # ironlb hack/images", s.Name, s.Name),
			Comment:   "static Go binary; /tmp for an emptyDir",
		},
	})
}

// layerTar is the layer's uncompressed tar: /<name> and /tmp.
func layerTar(name, binary string, mtime time.Time) ([]byte, error) {
	f, err := os.Open(binary)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", binary)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR,
	}); err != nil {
		return nil, err
	}
	if n, err := io.Copy(tw, f); err != nil {
		return nil, err
	} else if n != st.Size() {
		return nil, fmt.Errorf("%s changed while read", binary)
	}
	// 01000 is the sticky bit (c_ISVTX) in a tar header's mode.
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: mtime, Format: tar.FormatUSTAR,
	}); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dockerPlatform is the platform manifest.json lists: this program's, else the first.
func dockerPlatform(ps []v1.Platform) int {
	for i, p := range ps {
		if p.OS == runtime.GOOS && p.Architecture == runtime.GOARCH {
			return i
		}
	}
	return 0
}

// Write builds the image (one per platform) and writes it to path as an OCI image
// layout that is also a docker-save archive (see the package comment).
func Write(path string, s Spec) (Result, error) {
	if err := s.validate(); err != nil {
		return Result{}, err
	}
	t, _ := tag(s.Reference)
	res := Result{Path: path, Reference: s.Reference}

	var images []v1.Image
	for _, b := range s.Binaries {
		img, err := Image(s, b)
		if err != nil {
			return Result{}, err
		}
		images = append(images, img)
		res.Platforms = append(res.Platforms, b.Platform)
	}
	docker := dockerPlatform(res.Platforms)
	res.DockerPlatform = res.Platforms[docker]

	// index.json: one descriptor, named, for the image or the manifest list.
	annotations := map[string]string{
		AnnotationRefName:   t.TagStr(),
		AnnotationImageName: ImageName(t),
	}
	var top v1.ImageIndex
	if len(images) == 1 {
		p := res.Platforms[0]
		top = mutate.AppendManifests(empty.Index, mutate.IndexAddendum{
			Add:        images[0],
			Descriptor: v1.Descriptor{Annotations: annotations, Platform: &p},
		})
	} else {
		var adds []mutate.IndexAddendum
		for i, img := range images {
			p := res.Platforms[i]
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		}
		list := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.DockerManifestList)
		top = mutate.AppendManifests(empty.Index, mutate.IndexAddendum{
			Add:        list,
			Descriptor: v1.Descriptor{Annotations: annotations},
		})
	}
	im, err := top.IndexManifest()
	if err != nil {
		return Result{}, err
	}
	res.Digest, res.MediaType = im.Manifests[0].Digest, im.Manifests[0].MediaType

	// manifest.json: the docker-save view of one image, over the same blobs.
	cfgName, err := images[docker].ConfigName()
	if err != nil {
		return Result{}, err
	}
	layers, err := images[docker].Layers()
	if err != nil {
		return Result{}, err
	}
	dm := tarball.Manifest{{Config: blobPath(cfgName), RepoTags: []string{s.Reference}}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return Result{}, err
		}
		dm[0].Layers = append(dm[0].Layers, blobPath(d))
	}
	manifestJSON, err := json.Marshal(dm)
	if err != nil {
		return Result{}, err
	}

	dir, err := os.MkdirTemp(filepath.Dir(path), ".ociimage-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	if _, err := layout.Write(dir, top); err != nil {
		return Result{}, fmt.Errorf("OCI layout: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), manifestJSON, 0o644); err != nil {
		return Result{}, err
	}
	if res.Size, err = tarDir(path, dir, s.created()); err != nil {
		return Result{}, err
	}
	return res, nil
}

func blobPath(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// tarDir writes dir's files to the tar file out, in a fixed order with fixed
// metadata: oci-layout, index.json and manifest.json first (so that a reader can
// tell the format early), then the blobs by name.
func tarDir(out, dir string, mtime time.Time) (int64, error) {
	var order []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			order = append(order, rel+"/")
		case d.Type().IsRegular():
			order = append(order, rel)
		default:
			return fmt.Errorf("%s: not a regular file", p)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// The top files first, then the rest by name: a directory ("blobs/") sorts before
	// what is in it.
	first := []string{"oci-layout", "index.json", "manifest.json"}
	rank := func(n string) int {
		if i := slices.Index(first, n); i >= 0 {
			return i
		}
		return len(first)
	}
	slices.SortFunc(order, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tw := tar.NewWriter(tmp)
	for _, n := range order {
		hdr := &tar.Header{Name: n, ModTime: mtime, Format: tar.FormatUSTAR}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return 0, err
			}
			continue
		}
		if err := func() error {
			f, err := os.Open(filepath.Join(dir, filepath.FromSlash(n)))
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, st.Size()
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			return err
		}(); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return 0, err
	}
	st, err := tmp.Stat()
	if err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Archive is an image tarball opened both ways a loader may read it.
type Archive struct {
	// RepoTags are manifest.json's tags, and Docker the image it describes, read with
	// go-containerregistry's tarball package as `docker load` would.
	RepoTags []string
	Docker   v1.Image
	// Descriptor is index.json's only entry, read from the extracted OCI layout as
	// containerd would; Images are the images it leads to, in order, with Platforms.
	Descriptor v1.Descriptor
	Images     []v1.Image
	Platforms  []v1.Platform
}

// Open reads the archive at path, extracting its OCI layout into dir (an empty
// directory that the caller removes).
func Open(path, dir string) (*Archive, error) {
	a := &Archive{}
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	dm, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("docker view: %w", err)
	}
	if len(dm) != 1 {
		return nil, fmt.Errorf("docker view: manifest.json has %d images, want 1", len(dm))
	}
	a.RepoTags = dm[0].RepoTags
	if a.Docker, err = tarball.Image(opener, nil); err != nil {
		return nil, fmt.Errorf("docker view: %w", err)
	}

	if err := extract(path, dir); err != nil {
		return nil, fmt.Errorf("OCI view: %w", err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI view: %w", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI view: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI view: %w", err)
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("OCI view: index.json has %d descriptors, want 1", len(im.Manifests))
	}
	a.Descriptor = im.Manifests[0]
	switch {
	case a.Descriptor.MediaType.IsImage():
		img, err := idx.Image(a.Descriptor.Digest)
		if err != nil {
			return nil, fmt.Errorf("OCI view: %w", err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("OCI view: %w", err)
		}
		a.Images, a.Platforms = []v1.Image{img}, []v1.Platform{*cf.Platform()}
	case a.Descriptor.MediaType.IsIndex():
		list, err := idx.ImageIndex(a.Descriptor.Digest)
		if err != nil {
			return nil, fmt.Errorf("OCI view: %w", err)
		}
		lm, err := list.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("OCI view: %w", err)
		}
		for _, d := range lm.Manifests {
			if d.Platform == nil {
				return nil, fmt.Errorf("OCI view: manifest %s has no platform", d.Digest)
			}
			img, err := list.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("OCI view: %w", err)
			}
			a.Images, a.Platforms = append(a.Images, img), append(a.Platforms, *d.Platform)
		}
	default:
		return nil, fmt.Errorf("OCI view: index.json points at a %s", a.Descriptor.MediaType)
	}
	return a, nil
}

// File is one entry of an image's layer.
type File struct {
	Header *tar.Header
	// Data is a regular file's content.
	Data []byte
}

// LayerFiles reads the entries of the image's one layer, in order; an image of
// another shape (ironlb's have exactly one layer) is an error.
func LayerFiles(img v1.Image) ([]File, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var files []File
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Header: h, Data: data})
	}
}

// extract unpacks the tar file's regular files and directories into dir.
func extract(tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		n := path.Clean(hdr.Name)
		if !filepath.IsLocal(filepath.FromSlash(n)) {
			return fmt.Errorf("entry %q leaves the archive", hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(n))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: unexpected type %q", hdr.Name, hdr.Typeflag)
		}
	}
}
