package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// p11 is the part of the PKCS#11 API this package uses. *pkcs11.Ctx
// implements it; tests put a double in front of a real module to reach states
// SoftHSM2 cannot show (a PIN on its final try, a removed token).
type p11 interface {
	GetInfo() (pkcs11.Info, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetSlotInfo(slotID uint) (pkcs11.SlotInfo, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	GetMechanismList(slotID uint) ([]*pkcs11.Mechanism, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	Logout(sh pkcs11.SessionHandle) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
}

var _ p11 = (*pkcs11.Ctx)(nil)

// library is one loaded module, shared by every Module opened on the same
// path in this process.
type library struct {
	path     string
	ctx      *pkcs11.Ctx
	refs     int
	finalize bool // we initialised it, so we finalise it
}

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

// Multiarch is Debian's multiarch triplet for the architecture this
// program was built for ("x86_64-linux-gnu" on amd64), the directory under
// /usr/lib where Debian installs PKCS#11 modules.
func Multiarch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "386":
		return "i386-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	case "ppc64le":
		return "powerpc64le-linux-gnu"
	case "riscv64":
		return "riscv64-linux-gnu"
	default:
		return runtime.GOARCH + "-linux-gnu"
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
	return "", &Error{Op: "find module", Kind: ErrModuleNotFound,
		Detail: "none of " + strings.Join(paths, ", ") + " exists; install opensc (smart cards) or give the module path"}
}

// Module is a loaded and initialised PKCS#11 module. Close it when done.
type Module struct {
	path string
	p    p11
	lib  *library

	mu     sync.Mutex
	closed bool
}

// Open loads the PKCS#11 module at path and initialises it (C_Initialize with
// CKF_OS_LOCKING_OK). Opening a path that this process already has open
// shares the loaded module; a module that another library in the process
// initialised first (CKR_CRYPTOKI_ALREADY_INITIALIZED) is used as it is and
// never finalised by this package.
//
// A missing file gives ErrModuleNotFound; a file that cannot be loaded as a
// PKCS#11 module gives ErrNotModule.
func Open(path string) (*Module, error) {
	if path == "" {
		return nil, &Error{Op: "open module", Kind: ErrModuleNotFound, Detail: "no module path given"}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{Op: "open module", Kind: ErrModuleNotFound, Detail: err.Error()}
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &Error{Op: "open module", Kind: ErrModuleNotFound, Detail: fmt.Sprintf("%s does not exist", abs)}
	case err != nil:
		return nil, &Error{Op: "open module", Kind: ErrModuleNotFound, Detail: err.Error()}
	case st.IsDir():
		return nil, &Error{Op: "open module", Kind: ErrNotModule, Detail: fmt.Sprintf("%s is a directory", abs)}
	}

	libMu.Lock()
	defer libMu.Unlock()
	lib := libraries[abs]
	if lib == nil {
		ctx := pkcs11.New(abs)
		if ctx == nil {
			return nil, &Error{Op: "open module", Kind: ErrNotModule,
				Detail: fmt.Sprintf("%s could not be loaded or has no C_GetFunctionList", abs)}
		}
		lib = &library{path: abs, ctx: ctx, finalize: true}
		if err := ctx.Initialize(); err != nil {
			if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
				lib.finalize = false
			} else {
				ctx.Destroy()
				return nil, wrap("C_Initialize "+abs, err)
			}
		}
		libraries[abs] = lib
	}
	lib.refs++
	return &Module{path: abs, p: lib.ctx, lib: lib}, nil
}

// Path returns the module's absolute path.
func (m *Module) Path() string { return m.path }

// Close releases the module. The last Close of a path in the process
// finalises and unloads it, which ends every session and login on it. Close
// is idempotent.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.lib == nil {
		return nil
	}
	libMu.Lock()
	defer libMu.Unlock()
	m.lib.refs--
	if m.lib.refs > 0 {
		return nil
	}
	delete(libraries, m.lib.path)
	var err error
	if m.lib.finalize {
		err = wrap("C_Finalize", m.lib.ctx.Finalize())
	}
	m.lib.ctx.Destroy()
	return err
}

func (m *Module) check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return &Error{Op: "module", Kind: ErrClosed}
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
	if err := m.check(); err != nil {
		return ModuleInfo{}, err
	}
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
