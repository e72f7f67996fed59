//go:build cgo

// Package softhsm provides real SoftHSM2 tokens for tests and for the demo,
// and a test PKI that imitates Buypass SEID 2 enterprise certificates
// (see pki.go).
//
// Tests call New, which initialises a fresh token in the process store and
// returns what the code under test needs to find it: the module path, the
// slot, the label, the serial and the PINs. Keys are generated on the token
// (GenerateRSA, GenerateEC) and certificates written to it
// (WriteCertificate); NewWithKey and NewWithECKey do the usual setup in one
// call. Packages that use New call Main from TestMain, so that the store is
// removed when the tests finish:
//
//	func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }
//
// # One store per process
//
// SoftHSM2 reads SOFTHSM2_CONF once, in C_Initialize, and does not see
// tokens that other processes create afterwards. So a process has one store:
// a directory holding a softhsm2.conf and the token files. On first use the
// package writes the store (for tests, in a new temporary directory), sets
// SOFTHSM2_CONF to its softhsm2.conf with os.Setenv, loads the module and
// calls C_Initialize. It never calls C_Finalize: code under test that opens
// the same module gets CKR_CRYPTOKI_ALREADY_INITIALIZED, which it must
// tolerate, and then sees every token made here. Subprocesses, such as the
// CLI in end-to-end tests, inherit SOFTHSM2_CONF and see the same store.
//
// The store has to exist before anything else in the process initialises
// the module; otherwise SoftHSM2 would already have read another
// configuration, and opening the store fails with an error saying so.
//
// # Sessions and logins
//
// Every operation opens its own read-write session and closes it before
// returning; operations are serialised by a package mutex. Generating keys
// needs a user login. PKCS#11 login state belongs to the whole process, so
// when the code under test is already logged in to the token the harness
// uses that login and leaves it in place; otherwise it logs in and out
// again, which logs out every session of the process on that token. Do not
// generate keys on a token while code under test uses it concurrently.
package softhsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// ErrNotInstalled reports that no SoftHSM2 module was found. ModulePath
// wraps it with the places it looked and how to install SoftHSM2.
var ErrNotInstalled = errors.New("softhsm: SoftHSM2 is not installed")

// Fixed test credentials, used by New when Options leaves them empty and by
// the demo provisioner. They protect throwaway tokens only.
const (
	// DefaultPIN is the user PIN of test tokens.
	DefaultPIN = "123456"
	// DefaultSOPIN is the security officer PIN of test tokens.
	DefaultSOPIN = "12345678"
)

// modulePaths are the usual places of libsofthsm2.so, in the order tried.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",                  // Debian, Ubuntu
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", // Debian multiarch
	"/usr/lib64/softhsm/libsofthsm2.so",                // Fedora, RHEL
	"/usr/local/lib/softhsm/libsofthsm2.so",            // built from source
}

// ModulePath returns the path of the SoftHSM2 PKCS#11 module: the
// SOFTHSM2_MODULE environment variable when it is set, otherwise the first
// of the usual install locations that exists.
//
// The error wraps ErrNotInstalled when SOFTHSM2_MODULE is unset and no
// module was found. When SOFTHSM2_MODULE names a file that does not exist
// the error does not wrap ErrNotInstalled: an explicit setting that is
// wrong is a mistake to fix, not a reason to skip tests.
func ModulePath() (string, error) {
	if p := os.Getenv("SOFTHSM2_MODULE"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("softhsm: SOFTHSM2_MODULE: %w", err)
		}
		return p, nil
	}
	for _, p := range modulePaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no libsofthsm2.so in %s and SOFTHSM2_MODULE is unset; install it: apt-get install -y softhsm2",
		ErrNotInstalled, strings.Join(modulePaths, ", "))
}

// Store is a SoftHSM2 token store: a directory holding softhsm2.conf and a
// tokens directory, used by the SoftHSM2 module loaded into this process.
// A process has at most one Store; see the package documentation.
type Store struct {
	// Dir is the absolute path of the store directory.
	Dir string
	// Config is the path of the store's softhsm2.conf, the value
	// SOFTHSM2_CONF must have for another process to use the store.
	Config string
	// Module is the path of the SoftHSM2 module.
	Module string

	ctx *pkcs11.Ctx
}

var (
	// mu serialises every use of the module by this package and guards
	// active and process.
	mu sync.Mutex
	// active is the store the module in this process was initialised with.
	active *Store
)

// configMarker starts every softhsm2.conf this package writes; the demo
// provisioner looks for it before it replaces a directory.
const configMarker = "# SoftHSM2 store of github.com/mp-hsm/mp-hsm/softhsm"

// OpenStore opens the store in dir, creating dir, dir/softhsm2.conf and
// dir/tokens as needed, points SOFTHSM2_CONF at it and initialises the
// SoftHSM2 module in this process. Tokens already in dir/tokens remain.
//
// Opening the store the process already uses returns it again. Opening a
// second, different store fails, as does opening a store after something
// else in the process has initialised the module: SoftHSM2 reads its
// configuration only once.
func OpenStore(dir string) (*Store, error) {
	mu.Lock()
	defer mu.Unlock()
	return openStore(dir)
}

// openStore is OpenStore; mu must be held.
func openStore(dir string) (*Store, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("softhsm: store directory: %w", err)
	}
	if active != nil {
		if active.Dir == dir {
			return active, nil
		}
		return nil, fmt.Errorf("softhsm: cannot open store %s: this process already uses %s, and SoftHSM2 reads its configuration once per process", dir, active.Dir)
	}
	module, err := ModulePath()
	if err != nil {
		return nil, err
	}
	s := &Store{Dir: dir, Config: filepath.Join(dir, "softhsm2.conf"), Module: module}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := configMarker + "\n" +
		"directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := os.WriteFile(s.Config, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := os.Setenv("SOFTHSM2_CONF", s.Config); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	ctx := pkcs11.New(module)
	if ctx == nil {
		return nil, fmt.Errorf("softhsm: cannot load the PKCS#11 module %s", module)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return nil, fmt.Errorf("softhsm: %s was initialised in this process before the store was opened, so SoftHSM2 does not use %s: open the store (softhsm.New) before the code under test opens the module: %w", module, s.Config, err)
		}
		return nil, fmt.Errorf("softhsm: C_Initialize %s: %w", module, err)
	}
	s.ctx = ctx
	active = s
	return s, nil
}

// call runs f with the module context. If code under test in this process
// has called C_Finalize, it initialises the module again and retries once.
// mu must be held.
func (s *Store) call(f func(ctx *pkcs11.Ctx) error) error {
	err := f(s.ctx)
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		return err
	}
	if ierr := s.ctx.Initialize(); ierr != nil && !errors.Is(ierr, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return fmt.Errorf("%w (the module was finalised; initialising it again: %w)", err, ierr)
	}
	return f(s.ctx)
}

// Token is an initialised SoftHSM2 token, with what code under test needs
// to find it and log in.
type Token struct {
	// Module is the path of the SoftHSM2 module.
	Module string
	// Config is the path of the store's softhsm2.conf: the value
	// SOFTHSM2_CONF must have for a subprocess to see the token. This
	// process already has it.
	Config string
	// SlotID is the slot holding the token, as this process numbers it.
	// SoftHSM2 numbers slots per C_Initialize: another process, or this
	// one after C_Finalize and C_Initialize, sees the token in another
	// slot (derived from the serial). Subprocesses must find the token by
	// Label or Serial.
	SlotID uint
	// Label is the token label (CK_TOKEN_INFO label).
	Label string
	// Serial is the token serial number SoftHSM2 chose, 16 hex digits.
	Serial string
	// PIN is the user PIN.
	PIN string
	// SOPIN is the security officer PIN.
	SOPIN string

	store *Store
}

// InitToken initialises a new token labelled label in the store's free
// slot, with the given security officer and user PINs. The label must be
// 1 to 32 bytes and the PINs 4 to 255 bytes, as SoftHSM2 requires. Labels
// need not be unique, but code that finds tokens by label will be confused
// by duplicates.
func (s *Store) InitToken(label, pin, sopin string) (*Token, error) {
	if label == "" || len(label) > 32 {
		return nil, fmt.Errorf("softhsm: token label %q: must be 1 to 32 bytes", label)
	}
	for _, p := range []struct{ name, pin string }{{"PIN", pin}, {"SO PIN", sopin}} {
		if len(p.pin) < 4 || len(p.pin) > 255 {
			return nil, fmt.Errorf("softhsm: %s must be 4 to 255 bytes, not %d", p.name, len(p.pin))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	tok := &Token{Module: s.Module, Config: s.Config, Label: label, PIN: pin, SOPIN: sopin, store: s}
	err := s.call(func(ctx *pkcs11.Ctx) error {
		free, err := freeSlot(ctx)
		if err != nil {
			return err
		}
		if err := ctx.InitToken(free, sopin, label); err != nil {
			return fmt.Errorf("C_InitToken(slot %d): %w", free, err)
		}
		info, err := ctx.GetTokenInfo(free)
		if err != nil {
			return fmt.Errorf("C_GetTokenInfo(slot %d): %w", free, err)
		}
		tok.Serial = info.SerialNumber
		// SoftHSM2 adds a new free slot once the old one holds a token;
		// reading the slot list makes it do so, and finds our slot again
		// by serial in case its ID changed.
		if tok.SlotID, err = slotBySerial(ctx, tok.Serial); err != nil {
			return err
		}
		sh, err := ctx.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return fmt.Errorf("C_OpenSession: %w", err)
		}
		defer ctx.CloseSession(sh)
		if err := ctx.Login(sh, pkcs11.CKU_SO, sopin); err != nil {
			return fmt.Errorf("C_Login(CKU_SO): %w", err)
		}
		defer ctx.Logout(sh)
		if err := ctx.InitPIN(sh, pin); err != nil {
			return fmt.Errorf("C_InitPIN: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("softhsm: initialise token %q: %w", label, err)
	}
	return tok, nil
}

// freeSlot returns the slot whose token is not yet initialised.
func freeSlot(ctx *pkcs11.Ctx) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("C_GetSlotList: %w", err)
	}
	for _, id := range slots {
		info, err := ctx.GetTokenInfo(id)
		if err != nil {
			return 0, fmt.Errorf("C_GetTokenInfo(slot %d): %w", id, err)
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			return id, nil
		}
	}
	return 0, errors.New("SoftHSM2 offers no free slot")
}

// slotBySerial returns the slot holding the token with the given serial.
func slotBySerial(ctx *pkcs11.Ctx, serial string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("C_GetSlotList: %w", err)
	}
	for _, id := range slots {
		info, err := ctx.GetTokenInfo(id)
		if err != nil {
			return 0, fmt.Errorf("C_GetTokenInfo(slot %d): %w", id, err)
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && info.SerialNumber == serial {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no slot holds the token with serial %s", serial)
}
