package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAlreadyGone_TeardownOfWhatIsNotThereIsNoError: the errors ip gives
// for deleting a link or a namespace that does not exist are what teardown
// treats as done; other errors are not.
func TestAlreadyGone_TeardownOfWhatIsNotThereIsNoError(t *testing.T) {
	ctx := context.Background()
	const name = "ilb-gone-test"
	for _, args := range [][]string{{"link", "del", name}, {"netns", "del", name}} {
		_, err := run(ctx, "ip", args...)
		if err == nil {
			t.Fatalf("ip %v succeeded: %s existed", args, name)
		}
		if !alreadyGone(err) {
			t.Errorf("ip %v: %v is not taken as already gone", args, err)
		}
	}
	if _, err := run(ctx, "ip", "link", "add", "bogus"); err == nil || alreadyGone(err) {
		t.Errorf("a failure of another kind is taken as already gone: %v", err)
	}
}

// unreachableChildEnv marks the copy of the test binary that
// TestEnsureUnreachable_LabsComingUpTogether runs in a namespace of its own.
const unreachableChildEnv = "IRONLB_LAB_UNREACHABLE_CHILD"

// TestEnsureUnreachable_LabsComingUpTogether: the test suites bring their labs
// up side by side, and each adds the root namespace's unreachable routes for
// the lab ranges if they are missing. One that another lab added between its
// look and its add is there as wanted: no lab fails to come up for it. Run in
// a throwaway namespace, by a copy of the test binary, so that the machine's
// own routes are not touched.
func TestEnsureUnreachable_LabsComingUpTogether(t *testing.T) {
	ctx := context.Background()
	if os.Getenv(unreachableChildEnv) != "" {
		errs := make(chan error, 8)
		for range cap(errs) {
			go func() { errs <- ensureUnreachable(ctx) }()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root, for a network namespace of its own")
	}
	ns := fmt.Sprintf("ilb-unreach-%d", os.Getpid())
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = run(ctx, "ip", "netns", "del", ns) })
	for i := range 5 {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), unreachableChildEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("round %d, 8 labs coming up together: %v\n%s", i, err, out)
		}
		for _, r := range labRanges {
			out, err := run(ctx, "ip", "-n", ns, family(r.Addr()), "route", "show", "type", "unreachable", "exact", r.String())
			if err != nil || strings.TrimSpace(out) == "" {
				t.Fatalf("round %d: no unreachable route for %s: %v %q", i, r, err, out)
			}
			// The next round starts without them again.
			if _, err := run(ctx, "ip", "-n", ns, family(r.Addr()), "route", "del", "unreachable", r.String()); err != nil {
				t.Fatal(err)
			}
		}
	}
}
