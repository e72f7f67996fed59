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

// p11 is the part of the PKCS#11 API this package uses, so that tests can
// put a double in front of a real module for states SoftHSM2 cannot show.
type p11 interface {
	GetInfo() (ckInfo, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetSlotInfo(slotID uint) (ckSlotInfo, error)
	GetTokenInfo(slotID uint) (ckTokenInfo, error)
	OpenSession(slotID uint, flags uint) (sessionHandle, error)
	CloseSession(sh sessionHandle) error
	GetSessionInfo(sh sessionHandle) (ckSessionInfo, error)
	Login(sh sessionHandle, userType uint, pin string) error
	FindObjectsInit(sh sessionHandle, temp []*attribute) error
	FindObjects(sh sessionHandle, max int) ([]objectHandle, bool, error)
	FindObjectsFinal(sh sessionHandle) error
	GetAttributeValue(sh sessionHandle, o objectHandle, a []*attribute) ([]*attribute, error)
	SignInit(sh sessionHandle, m []*mechanism, o objectHandle) error
	Sign(sh sessionHandle, message []byte) ([]byte, error)
	GenerateKeyPair(sh sessionHandle, m []*mechanism, pub, priv []*attribute) (objectHandle, objectHandle, error)
	CreateObject(sh sessionHandle, temp []*attribute) (objectHandle, error)
	DestroyObject(sh sessionHandle, oh objectHandle) error
}

// library is one loaded module, shared by every Module opened on the same
// path in this process.
type library struct {
	path       string
	ctx        *ctx
	refs       int    // open Modules of this load; guarded by libMu
	finalize   bool   // we initialised it, so we finalise it
	loadOutput string // what the module wrote on standard error while it loaded, when held

	// gone: other code finalised the module under this load (crypto11 does
	// when its last Context closes), so its handles may now name another
	// load's: never used again, every call returns tokenerr.ErrClosed.
	gone atomic.Bool
}

const finalisedDetail = "other code in this process finalised the module (C_Finalize), " +
	"as crypto11 does when its last Context closes; open the module again"

var (
	libMu     sync.Mutex
	libraries = map[string]*library{}
)

// Module is a loaded and initialised PKCS#11 module. Close it when done.
type Module struct {
	p    p11
	lib  *library
	gate gate // counts the calls in flight, including those of its tokens and keys

	tokMu  sync.Mutex
	tokens map[*Token]struct{} // open tokens, closed by Module.Close

	seenMu sync.Mutex
	seen   map[uint]seenFlags // per slot, the flags last read (see freshFlags)
}

// OpenOptions are the choices of OpenWith; the zero value is Open's.
type OpenOptions struct {
	// HoldLoadOutput holds back what modules write on standard error while
	// this call loads the module (tpm2-pkcs11 without a TPM writes a dozen
	// lines of errors), for SelectionError.ModuleOutput and LoadOutput. All of
	// file descriptor 2 is held meanwhile: use it only while nothing else
	// writes there (a command line tool at start, not a daemon). Linux only.
	HoldLoadOutput bool
}

const maxLoadOutput = 8 << 10 // bytes kept of a module's output on loading

// Open loads the PKCS#11 module at path and initialises it (C_Initialize with
// CKF_OS_LOCKING_OK). A path this process has open already is shared; a
// module that other code initialised first is used and never finalised here;
// one that other code finalised is loaded afresh (the older Modules then
// return tokenerr.ErrClosed). A missing file gives
// tokenerr.ErrModuleNotFound, a file that is no PKCS#11 module ErrNotModule.
func Open(path string) (*Module, error) { return OpenWith(path, OpenOptions{}) }

// OpenWith is Open with options.
func OpenWith(path string, o OpenOptions) (*Module, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	fail := func(kind error, detail string) (*Module, error) {
		return nil, &Error{Op: "open module", Kind: kind, Detail: detail}
	}
	if path == "" {
		return fail(tokenerr.ErrModuleNotFound, "no module path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fail(tokenerr.ErrModuleNotFound, err.Error())
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(tokenerr.ErrModuleNotFound, abs+" does not exist")
	case err != nil:
		return fail(tokenerr.ErrModuleNotFound, err.Error())
	case st.IsDir():
		return fail(tokenerr.ErrNotModule, abs+" is a directory")
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
			return fail(tokenerr.ErrNotModule, abs+" could not be loaded or has no C_GetFunctionList")
		}
		lib = &library{path: abs, ctx: c, finalize: true, loadOutput: held}
		if errors.Is(initErr, ReturnValue(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			lib.finalize = false
		} else if initErr != nil {
			c.Destroy()
			if held != "" {
				fmt.Fprintln(os.Stderr, held) // the module failed: what it wrote may say why
			}
			return nil, wrap("C_Initialize "+abs, initErr)
		}
		libraries[abs] = lib
	}
	lib.refs++
	return &Module{p: lib.ctx, lib: lib, tokens: map[*Token]struct{}{}, seen: map[uint]seenFlags{}}, nil
}

// Path returns the module's absolute path.
func (m *Module) Path() string { return m.lib.path }

// Close waits for the calls in flight on the module, its tokens and keys,
// then closes every token opened from it (later calls return
// tokenerr.ErrClosed). The last Close of a path unloads the module, and
// finalises it only when Open initialised it. Close is idempotent; it must
// not be called from a PINSource.
func (m *Module) Close() error {
	if !m.gate.close() {
		return nil
	}
	// No call is in flight now and none can start.
	m.tokMu.Lock()
	toks := m.tokens
	m.tokens = nil
	m.tokMu.Unlock()
	libMu.Lock()
	defer libMu.Unlock()
	m.lib.refs--
	final := m.lib.refs == 0 && m.lib.finalize && !m.lib.gone.Load()
	// alone: finalised next, and no other code has sessions on it (crypto11
	// v1.6.2 refuses a module initialised before it). Then one
	// C_CloseAllSessions per slot ends the sessions, not a round trip per
	// session. Not through a test double.
	alone := final && m.p == p11(m.lib.ctx)
	var slots []uint
	for t := range toks {
		t.gate.close()
		if !alone {
			_ = t.closeSessions()
			continue
		}
		t.dropSessions(false)
		if !slices.Contains(slots, t.slotID) {
			slots = append(slots, t.slotID)
		}
	}
	if alone {
		_ = m.lib.ctx.closeAllSessions(slots) // ignored as closeSessions's errors are: finalised next
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

// enter counts a call in, or returns tokenerr.ErrClosed for op. Every
// successful enter is paired with m.gate.leave().
func (m *Module) enter(op string) error {
	if !m.gate.enter() {
		return &Error{Op: op, Kind: tokenerr.ErrClosed, Detail: "the module was closed"}
	}
	if m.lib.gone.Load() {
		m.gate.leave()
		return &Error{Op: op, Kind: tokenerr.ErrClosed, Code: pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, Detail: finalisedDetail}
	}
	return nil
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

// LoadOutput returns what the module (and the modules it loaded) wrote on
// standard error while this process loaded it, when OpenWith held it back
// (HoldLoadOutput), at most 8 KiB; "" otherwise.
func (m *Module) LoadOutput() string { return m.lib.loadOutput }

func trimLoadOutput(out []byte) string {
	s := strings.Trim(string(out), "\r\n")
	if len(s) > maxLoadOutput {
		s = s[:maxLoadOutput] + "\n[... cut at 8 KiB]"
	}
	return s
}
