//go:build cgo

package backends

import (
	"os"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// preloaded keeps the modules PreloadModules loaded for the life of the
// process.
var preloaded struct {
	once sync.Once
	ctxs []*pkcs11.Ctx
}

// PreloadModules loads, without initialising them, the modules that must
// be loaded into a process before the others, and keeps them loaded.
// Call it first in a TestMain that starts several backends.
//
// opencryptoki's libopencryptoki.so needs libitm, and its C_Initialize
// crashed (SIGSEGV in libitm's _ITM_beginTransaction, from the TPM STDLL's
// ST_Initialize) in a process that had loaded libstdc++, which
// libsofthsm2.so brings, before libitm; loaded first, it works.
func PreloadModules() {
	preloaded.once.Do(func() {
		for _, path := range []string{"/usr/lib/" + hsm.Multiarch() + "/pkcs11/libopencryptoki.so"} {
			if _, err := os.Stat(path); err != nil {
				continue // not installed: its backend says so when it starts
			}
			if ctx := pkcs11.New(path); ctx != nil {
				preloaded.ctxs = append(preloaded.ctxs, ctx)
			}
		}
	})
}
