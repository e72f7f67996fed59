package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// p11 is the part of the PKCS#11 API this package uses. *ctx (miekg/pkcs11's
// Ctx, with mechanism parameters kept until C_Sign) implements it; tests put a double in front of a real module to reach states
// SoftHSM2 cannot show (a PIN on its final try, a removed token).
type p11 interface {
	GetInfo() (ckInfo, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetSlotInfo(slotID uint) (ckSlotInfo, error)
	GetTokenInfo(slotID uint) (ckTokenInfo, error)
	GetMechanismList(slotID uint) ([]*mechanism, error)
	OpenSession(slotID uint, flags uint) (sessionHandle, error)
	CloseSession(sh sessionHandle) error
	GetSessionInfo(sh sessionHandle) (ckSessionInfo, error)
	Login(sh sessionHandle, userType uint, pin string) error
	Logout(sh sessionHandle) error
	FindObjectsInit(sh sessionHandle, temp []*attribute) error
	FindObjects(sh sessionHandle, max int) ([]objectHandle, bool, error)
	FindObjectsFinal(sh sessionHandle) error
	GetAttributeValue(sh sessionHandle, o objectHandle, a []*attribute) ([]*attribute, error)
	SignInit(sh sessionHandle, m []*mechanism, o objectHandle) error
	Sign(sh sessionHandle, message []byte) ([]byte, error)
}

// library is one loaded module, shared by every Module opened on the same
// path in this process.
type library struct {
	path     string
	ctx      *ctx
	refs     int  // open Modules of this load; guarded by libMu
	finalize bool // we initialised it, so we finalise it
	// loadOutput is what the module wrote on standard error while it
	// loaded, when OpenWith held it back.
	loadOutput string

	// gone is set once the module turned out to have been finalised under
	// this load by other code in the process (crypto11 does so when its
	// last Context closes). The session and object handles of its Modules
	// belong to the finalised module and may name another's in a module
	// initialised again: they are never used again, every call through
	// them returns tokenerr.ErrClosed, and the last Close finalises nothing.
	gone atomic.Bool
}

// finalisedDetail explains CKR_CRYPTOKI_NOT_INITIALIZED from a module that
// this package had open.
const finalisedDetail = "other code in this process finalised the module (C_Finalize), " +
	"as crypto11 does when its last Context closes; open the module again"

var (
	libMu     sync.Mutex
	libraries = map[string]*library{}
)

// DefaultModulePaths returns the modules tried, in order, when no module is
// given: the p11-kit proxy, OpenSC and SoftHSM2 at their Debian paths for
// the architecture this program was built for.
func DefaultModulePaths() []string {
	lib := "/usr/lib/" + Multiarch()
	return []string{
		lib + "/p11-kit-proxy.so",
		lib + "/opensc-pkcs11.so",
		"/usr/lib/softhsm/libsofthsm2.so",
	}
}

// FindDefaultModule returns the first of DefaultModulePaths that exists.
func FindDefaultModule() (string, error) {
	return firstModule(DefaultModulePaths())
}

// firstModule returns the first of paths that is a regular file (or a
// link to one).
func firstModule(paths []string) (string, error) {
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", &Error{Op: "find module", Kind: tokenerr.ErrModuleNotFound,
		Detail: "none of " + strings.Join(paths, ", ") + " exists; install opensc (smart cards) or give the module path"}
}

// Module is a loaded and initialised PKCS#11 module. Close it when done.
type Module struct {
	path string
	p    p11
	lib  *library

	// gate is the module's closed state and counts the calls in flight into
	// the module, including those of its tokens and keys.
	gate gate

	tokMu  sync.Mutex
	tokens map[*Token]struct{} // open tokens, closed by Module.Close

	seenMu sync.Mutex
	seen   map[uint]seenFlags // per slot, the flags last read (see freshFlags)
}

// Open loads the PKCS#11 module at path and initialises it (C_Initialize with
// CKF_OS_LOCKING_OK). Opening a path that this process already has open
// shares the loaded module; a module that another library in the process
// initialised first (CKR_CRYPTOKI_ALREADY_INITIALIZED) is used as it is and
// never finalised by this package.
//
// When other code has finalised the module under the Modules this process
// has open (C_GetInfo answers CKR_CRYPTOKI_NOT_INITIALIZED), Open loads and
// initialises it afresh, and those older Modules, their tokens and keys
// return tokenerr.ErrClosed from then on.
//
// A missing file gives tokenerr.ErrModuleNotFound; a file that cannot be loaded as a
// PKCS#11 module gives tokenerr.ErrNotModule.
func Open(path string) (*Module, error) { return OpenWith(path, OpenOptions{}) }

// OpenWith is Open with options.
func OpenWith(path string, o OpenOptions) (*Module, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, &Error{Op: "open module", Kind: tokenerr.ErrModuleNotFound, Detail: "no module path given"}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{Op: "open module", Kind: tokenerr.ErrModuleNotFound, Detail: err.Error()}
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &Error{Op: "open module", Kind: tokenerr.ErrModuleNotFound, Detail: fmt.Sprintf("%s does not exist", abs)}
	case err != nil:
		return nil, &Error{Op: "open module", Kind: tokenerr.ErrModuleNotFound, Detail: err.Error()}
	case st.IsDir():
		return nil, &Error{Op: "open module", Kind: tokenerr.ErrNotModule, Detail: fmt.Sprintf("%s is a directory", abs)}
	}

	libMu.Lock()
	defer libMu.Unlock()
	lib := libraries[abs]
	if lib != nil {
		if _, err := lib.ctx.GetInfo(); errors.Is(err, ReturnValue(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
			lib.gone.Store(true)
			delete(libraries, abs)
			lib = nil
		}
	}
	if lib == nil {
		var c *ctx
		var initErr error
		load := func() { c, initErr = loadModule(abs) }
		var held string
		if o.HoldLoadOutput {
			held = holdStderr(load)
		} else {
			load()
		}
		if c == nil {
			return nil, &Error{Op: "open module", Kind: tokenerr.ErrNotModule,
				Detail: fmt.Sprintf("%s could not be loaded or has no C_GetFunctionList", abs)}
		}
		lib = &library{path: abs, ctx: c, finalize: true, loadOutput: held}
		if err := initErr; err != nil {
			if errors.Is(err, ReturnValue(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
				lib.finalize = false
			} else {
				c.Destroy()
				if held != "" {
					// The module failed: what it wrote may say why.
					fmt.Fprintln(os.Stderr, held)
				}
				return nil, wrap("C_Initialize "+abs, err)
			}
		}
		libraries[abs] = lib
	}
	lib.refs++
	return &Module{path: abs, p: lib.ctx, lib: lib, tokens: map[*Token]struct{}{}}, nil
}

// Path returns the module's absolute path.
func (m *Module) Path() string { return m.path }

// Close releases the module. It first waits for the calls in flight on the
// module and on its tokens and keys (a signature under way finishes), then
// closes every token opened from it, so that later calls on them return
// tokenerr.ErrClosed. The last Close of a path in the process unloads the module,
// and finalises it when Open initialised it: never a module that other code
// initialised, nor one that other code finalised under it; before
// finalising, it ends the tokens' sessions with one C_CloseAllSessions per
// slot. Close is
// idempotent; it must not be called from a PINSource.
func (m *Module) Close() error {
	if !m.gate.close() {
		return nil
	}
	// No call is in flight now and none can start: the tokens' sessions
	// can be closed here without racing a signature.
	m.tokMu.Lock()
	toks := m.tokens
	m.tokens = nil
	m.tokMu.Unlock()
	if m.lib == nil {
		for t := range toks {
			t.gate.close()
			_ = t.closeSessions()
		}
		return nil
	}
	libMu.Lock()
	defer libMu.Unlock()
	m.lib.refs--
	final := m.lib.refs == 0 && m.lib.finalize && !m.lib.gone.Load()
	// alone: this is the last Module of a load that this package
	// initialised, so the module is finalised next and no other code in
	// the process has sessions on it (crypto11 v1.6.2 refuses a module
	// initialised before it: internal/crypto11interop). One
	// C_CloseAllSessions per slot then ends the tokens' sessions, where
	// C_CloseSession would cost one call each (a round trip on a network
	// HSM). Not through a test double (m.p is then not the load's ctx).
	alone := final && m.p == p11(m.lib.ctx)
	var slots []uint
	for t := range toks {
		t.gate.close()
		if alone {
			t.dropSessions()
			if !slices.Contains(slots, t.slotID) {
				slots = append(slots, t.slotID)
			}
		} else {
			_ = t.closeSessions()
		}
	}
	if alone {
		// Ignored as closeSessions's errors are: the module is
		// finalised next.
		_ = m.lib.ctx.closeAllSessions(slots)
	}
	if m.lib.refs > 0 {
		return nil
	}
	if libraries[m.lib.path] == m.lib {
		delete(libraries, m.lib.path)
	}
	var err error
	if final {
		err = wrap("C_Finalize", m.lib.ctx.Finalize())
	}
	m.lib.ctx.Destroy()
	return err
}

// enter counts a call into the module in, or returns tokenerr.ErrClosed for op.
// Every successful enter is paired with m.gate.leave().
func (m *Module) enter(op string) error {
	if !m.gate.enter() {
		return &Error{Op: op, Kind: tokenerr.ErrClosed, Detail: "the module was closed"}
	}
	if m.gone() {
		m.gate.leave()
		return &Error{Op: op, Kind: tokenerr.ErrClosed, Code: pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, Detail: finalisedDetail}
	}
	return nil
}

// gone reports whether other code finalised the module under m (see
// library.gone).
func (m *Module) gone() bool { return m.lib != nil && m.lib.gone.Load() }

// forget drops t from the tokens Close will close.
func (m *Module) forget(t *Token) {
	m.tokMu.Lock()
	defer m.tokMu.Unlock()
	delete(m.tokens, t)
}

// ModuleInfo describes a module (C_GetInfo).
type ModuleInfo struct {
	Manufacturer string
	Description  string
	Version      string // library version, "major.minor"
	Cryptoki     string // PKCS#11 version implemented, "major.minor"
}

// Info returns the module's description.
func (m *Module) Info() (ModuleInfo, error) {
	if err := m.enter("module info"); err != nil {
		return ModuleInfo{}, err
	}
	defer m.gate.leave()
	return m.info()
}

// info reads C_GetInfo. The caller is inside m.gate.
func (m *Module) info() (ModuleInfo, error) {
	i, err := m.p.GetInfo()
	if err != nil {
		return ModuleInfo{}, wrap("C_GetInfo", err)
	}
	return ModuleInfo{
		Manufacturer: strings.TrimSpace(i.ManufacturerID),
		Description:  strings.TrimSpace(i.LibraryDescription),
		Version:      fmt.Sprintf("%d.%d", i.LibraryVersion.Major, i.LibraryVersion.Minor),
		Cryptoki:     fmt.Sprintf("%d.%d", i.CryptokiVersion.Major, i.CryptokiVersion.Minor),
	}, nil
}
