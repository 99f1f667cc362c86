package lab

import (
	"context"
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
