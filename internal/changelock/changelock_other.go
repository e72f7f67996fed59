//go:build !unix

package changelock

import (
	"context"
	"errors"
)

// Lock is a held lock; Unlock releases it.
type Lock struct{}

// Dir returns "": there are no lock files on this system.
func Dir() string { return "" }

// Acquire fails: flock(2) is Unix's, and a change without the lock could
// interleave with another process's.
func Acquire(ctx context.Context, kind string, parts ...string) (*Lock, error) {
	return nil, errors.New("changes to tokens and key sets need flock(2), which this system lacks")
}

// AcquireModule fails, as Acquire does.
func AcquireModule(ctx context.Context, path string) (*Lock, error) {
	return Acquire(ctx, "module", path)
}

// Unlock does nothing.
func (l *Lock) Unlock() {}
