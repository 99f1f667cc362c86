package testenv

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ironlb/ironlb/internal/upstream"
)

// Kubectl is the kubectl a lab links into its bin/ for people: the one the
// cache holds, else one on the PATH whose version kubectl's skew policy
// allows against the lab's API server (one minor version either way), else
// "" and it has to be built. The lab itself needs none.
func Kubectl(ctx context.Context) string {
	dir, err := CacheDir(ctx)
	if err != nil {
		return ""
	}
	if len(upstream.Missing(dir, []string{"kubectl"})) == 0 {
		return filepath.Join(dir, "kubectl")
	}
	root, err := RepoRoot()
	if err != nil {
		return ""
	}
	pinned, err := upstream.Pinned(filepath.Join(root, "e2e", "go.mod"))
	if err != nil {
		return ""
	}
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version", "--client", "-o", "json").Output()
	if err != nil {
		return ""
	}
	var v struct {
		ClientVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"clientVersion"`
	}
	if json.Unmarshal(out, &v) != nil || !skewAllowed(v.ClientVersion.GitVersion, pinned[upstream.KubernetesModule]) {
		return ""
	}
	return path
}

// skewAllowed says whether a kubectl of version client works with an API
// server of version server: same major, minor at most one apart.
func skewAllowed(client, server string) bool {
	cMaj, cMin, ok1 := majorMinor(client)
	sMaj, sMin, ok2 := majorMinor(server)
	return ok1 && ok2 && cMaj == sMaj && cMin-sMin <= 1 && sMin-cMin <= 1
}

// majorMinor reads "v1.37.1" (or "v1.32.4-dispatcher") as 1, 37.
func majorMinor(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimRight(parts[1], "+"))
	return major, minor, err1 == nil && err2 == nil
}
