// Command images builds ironlb's two container images without a container engine
// (make images):
//
//	go run ./hack/images -out bin/images -version v0.1.0 -commit <sha> \
//	    [-platforms linux/amd64,linux/arm64] [-registry ghcr.io/ironlb]
//
// It builds ironlb-ccm and ironlb-speaker as static binaries (CGO_ENABLED=0, -trimpath,
// the version and commit linked in) for each platform, and writes
// <out>/ironlb-ccm.tar and <out>/ironlb-speaker.tar, tagged
// <registry>/ironlb-ccm:<version> and <registry>/ironlb-speaker:<version>. Each tar
// is an OCI image layout and a docker-save archive at once (see internal/ociimage):
//
//	kind load image-archive bin/images/ironlb-ccm.tar
//	docker load -i bin/images/ironlb-ccm.tar        # or podman load
//	skopeo copy oci-archive:bin/images/ironlb-ccm.tar docker://ghcr.io/ironlb/ironlb-ccm:v0.1.0
//
// The same commit, version and toolchain give the same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ironlb/ironlb/internal/ociimage"
)

const versionPkg = "github.com/ironlb/ironlb/internal/version"

// binaries are the images built: each one's name (its main package is ./cmd/<name>)
// and description label.
var binaries = []struct{ name, description string }{
	{"ironlb-ccm", "ironlb cloud-controller-manager: assigns LoadBalancer Service addresses from IPPools"},
	{"ironlb-speaker", "ironlb speaker: makes LoadBalancer addresses reachable from each node (L2 ARP/NDP or BGP)"},
}

type options struct {
	out       string
	version   string
	commit    string
	registry  string
	platforms []v1.Platform
	created   time.Time
	goCmd     string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, r := range results {
		fmt.Printf("%s %s %s %s\n", r.Reference, r.Digest, humanSize(r.Size), r.Path)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	o := options{}
	var platforms, created string
	fs.StringVar(&o.out, "out", "bin/images", "directory for <binary>.tar")
	fs.StringVar(&o.version, "version", "", "version: the image tag and the binaries' --version (required)")
	fs.StringVar(&o.commit, "commit", "", "commit the binaries and the revision label name (default: git rev-parse HEAD, else unknown)")
	fs.StringVar(&o.registry, "registry", "ghcr.io/ironlb", "registry and namespace of the references")
	fs.StringVar(&platforms, "platforms", "", "comma-separated os/arch[/variant] list (default: linux/"+runtime.GOARCH+")")
	fs.StringVar(&created, "created", "", "image time, RFC 3339 or Unix seconds (default: $SOURCE_DATE_EPOCH, else the commit's committer time from git, else the Unix epoch)")
	fs.StringVar(&o.goCmd, "go", "go", "go command")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.version == "" {
		return o, errors.New("-version is required")
	}
	if o.commit == "" {
		o.commit = "unknown"
		if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
			o.commit = strings.TrimSpace(string(out))
		}
	}
	var err error
	if o.platforms, err = parsePlatforms(platforms); err != nil {
		return o, err
	}
	if created == "" {
		created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if created == "" {
		if out, err := exec.Command("git", "show", "-s", "--format=%ct", o.commit+"^{commit}", "--").Output(); err == nil {
			created = strings.TrimSpace(string(out))
		}
	}
	if created != "" {
		if o.created, err = parseTime(created); err != nil {
			return o, fmt.Errorf("-created: %w", err)
		}
	}
	return o, nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	if strings.TrimSpace(s) == "" {
		return []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}, nil
	}
	var ps []v1.Platform
	for f := range strings.SplitSeq(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want linux/<arch>[/<variant>]", f)
		}
		ps = append(ps, *p)
	}
	return ps, nil
}

func parseTime(s string) (time.Time, error) {
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(secs, 0).UTC(), nil
	}
	return time.Parse(time.RFC3339, s)
}

// run builds the binaries for every platform and writes one archive per binary.
func run(ctx context.Context, o options, log io.Writer) ([]ociimage.Result, error) {
	root, err := moduleRoot(ctx, o.goCmd)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.out, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	work, err = filepath.Abs(work)
	if err != nil {
		return nil, err
	}

	built := map[string][]ociimage.Binary{}
	for _, p := range o.platforms {
		dir := filepath.Join(work, strings.ReplaceAll(p.String(), "/", "-"))
		if err := goBuild(ctx, o, root, p, dir, log); err != nil {
			return nil, err
		}
		for _, b := range binaries {
			built[b.name] = append(built[b.name], ociimage.Binary{Platform: p, Path: filepath.Join(dir, b.name)})
		}
	}

	results := make([]ociimage.Result, len(binaries))
	errs := make([]error, len(binaries))
	var wg sync.WaitGroup
	for i, b := range binaries {
		wg.Go(func() {
			results[i], errs[i] = ociimage.Write(filepath.Join(o.out, b.name+".tar"), ociimage.Spec{
				Name:        b.name,
				Reference:   reference(o.registry, b.name, o.version),
				Version:     o.version,
				Revision:    o.commit,
				Description: b.description,
				Created:     o.created,
				Binaries:    built[b.name],
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return results, nil
}

func reference(registry, name, version string) string {
	return strings.TrimSuffix(registry, "/") + "/" + name + ":" + version
}

// ldflags strips the binaries and links in the version and commit.
func ldflags(version, commit string) string {
	return fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s", versionPkg, version, versionPkg, commit)
}

// goBuild builds every binary for one platform into dir, in one go build.
func goBuild(ctx context.Context, o options, root string, p v1.Platform, dir string, log io.Writer) error {
	if strings.ContainsAny(o.version+o.commit, " \t\n'\"") {
		return fmt.Errorf("version %q and commit %q must be single words", o.version, o.commit)
	}
	args := []string{"build", "-trimpath", "-ldflags", ldflags(o.version, o.commit), "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b.name)
	}
	cmd := exec.CommandContext(ctx, o.goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	switch v := strings.TrimPrefix(p.Variant, "v"); {
	case p.Variant == "":
	case p.Architecture == "arm":
		cmd.Env = append(cmd.Env, "GOARM="+v)
	case p.Architecture == "amd64":
		cmd.Env = append(cmd.Env, "GOAMD64="+p.Variant)
	}
	cmd.Stdout, cmd.Stderr = log, log
	fmt.Fprintf(log, "building %s for %s\n", strings.Join(args[len(args)-len(binaries):], " "), p)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", p, err)
	}
	return nil
}

// moduleRoot is the directory of the main module's go.mod, so that the command and its
// test build the same packages wherever they run from.
func moduleRoot(ctx context.Context, goCmd string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the ironlb module")
	}
	return filepath.Dir(gomod), nil
}

func humanSize(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
