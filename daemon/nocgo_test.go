//go:build !cgo

package daemon_test

import (
	"context"
	"testing"

	"github.com/mp-hsm/mp-hsm/signer"
)

// sharedOpener opens the key the fixtures sign with: without cgo, the key
// in memory made once for the package (with cgo, a SoftHSM2 token: see
// softhsm_test.go).
func sharedOpener(t testing.TB) func(context.Context) (signer.Signer, error) {
	s := sharedFileKey(t)
	return func(context.Context) (signer.Signer, error) { return s, nil }
}
