//go:build cgo

package backends

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// ockInitToken re-initialises the soft token and returns its serial
// number: it deletes the token's store (ockWipe), so that opencryptoki
// makes a new one with the default SO PIN, then through PKCS#11 gives it
// our label (C_InitToken), our SO PIN (C_SetPIN) and our user PIN
// (C_InitPIN). pkcsconf would do the same, but it exits 0 when it fails.
//
// C_InitToken alone is not enough: opencryptoki 3.8.1 keeps, on
// C_InitToken, the SO PIN it is given but encrypts the SO's master key
// (MK_SO) under the default SO PIN, so that every later SO login fails
// with CKR_FUNCTION_FAILED unless the SO PIN is the default.
func ockInitToken(module string) (serial string, err error) {
	if err := ockWipe(); err != nil {
		return "", err
	}
	p := pkcs11.New(module)
	if p == nil {
		return "", fmt.Errorf("opencryptoki: %s could not be loaded", module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return "", fmt.Errorf("opencryptoki: this process still has %s initialised (close every hsm.Module "+
				"on it before Start): %w", module, err)
		}
		return "", fmt.Errorf("opencryptoki: C_Initialize (is pkcsslotd running, and is this user listed "+
			"in group pkcs11 in /etc/group?): %w", err)
	}
	defer func() {
		if e := p.Finalize(); e != nil && err == nil {
			err = fmt.Errorf("opencryptoki: C_Finalize: %w", e)
		}
	}()
	slot, _, err := ockSoftSlot(p)
	if err != nil {
		return "", err
	}
	if err := p.InitToken(slot, ockDefaultSOPIN, ockLabel); err != nil {
		return "", fmt.Errorf("opencryptoki: C_InitToken: %w", err)
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return "", fmt.Errorf("opencryptoki: C_OpenSession: %w", err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_SO, ockDefaultSOPIN); err != nil {
		return "", fmt.Errorf("opencryptoki: C_Login as SO: %w", err)
	}
	if err := p.SetPIN(sh, ockDefaultSOPIN, ockSOPIN); err != nil {
		return "", fmt.Errorf("opencryptoki: C_SetPIN of the SO: %w", err)
	}
	if err := p.InitPIN(sh, ockPIN); err != nil {
		return "", fmt.Errorf("opencryptoki: C_InitPIN: %w", err)
	}
	if err := p.Logout(sh); err != nil {
		return "", fmt.Errorf("opencryptoki: C_Logout: %w", err)
	}
	ti, err := p.GetTokenInfo(slot)
	if err != nil {
		return "", fmt.Errorf("opencryptoki: C_GetTokenInfo: %w", err)
	}
	const want = pkcs11.CKF_TOKEN_INITIALIZED | pkcs11.CKF_USER_PIN_INITIALIZED | pkcs11.CKF_LOGIN_REQUIRED
	const unwanted = pkcs11.CKF_USER_PIN_TO_BE_CHANGED | pkcs11.CKF_USER_PIN_COUNT_LOW |
		pkcs11.CKF_USER_PIN_FINAL_TRY | pkcs11.CKF_USER_PIN_LOCKED | pkcs11.CKF_SO_PIN_TO_BE_CHANGED
	if ti.Flags&want != want || ti.Flags&unwanted != 0 {
		return "", fmt.Errorf("opencryptoki: after initialisation the token's flags are %s", hsm.TokenFlags(ti.Flags))
	}
	return strings.TrimRight(ti.SerialNumber, " \x00"), nil
}

// The soft token's store, and the shared memory in which opencryptoki
// keeps the token's data while processes use it.
const (
	ockStore = "/var/lib/opencryptoki/swtok"
	ockShm   = "/dev/shm/var.lib.opencryptoki.swtok"
)

// ockWipe deletes the soft token's store: its token data (NVTOK.DAT), the
// master keys and the objects, and the shared memory that caches them. It
// runs under the lock file, when no process of ours has opencryptoki
// loaded. A token initialised with a label not ours is someone's: ockWipe
// refuses to delete it.
func ockWipe() error {
	nv, err := os.ReadFile(filepath.Join(ockStore, "NVTOK.DAT"))
	// NVTOK.DAT begins with the token's CK_TOKEN_INFO: the label (32
	// bytes), manufacturer (32), model (16), serial number (16), flags (32
	// bits, little-endian on the machines Debian builds it for).
	if err == nil && len(nv) >= 100 {
		label := strings.TrimRight(string(nv[:32]), " \x00")
		flags := uint(nv[96]) | uint(nv[97])<<8 | uint(nv[98])<<16 | uint(nv[99])<<24
		if flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && label != ockLabel {
			return fmt.Errorf("opencryptoki: the soft token in %s is initialised with label %q, not %q: "+
				"it is someone's, and re-initialising it would delete its keys", ockStore, label, ockLabel)
		}
	}
	objs, _ := filepath.Glob(filepath.Join(ockStore, "TOK_OBJ", "*"))
	for _, f := range append(objs, filepath.Join(ockStore, "NVTOK.DAT"), filepath.Join(ockStore, "MK_SO"),
		filepath.Join(ockStore, "MK_USER")) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("opencryptoki: re-initialising the soft token: %w", err)
		}
	}
	// Emptied rather than removed: a user in group pkcs11 may not remove
	// root's file from /dev/shm (sticky), but may write it (mode 0666),
	// and opencryptoki starts an empty one afresh.
	if err := os.Truncate(ockShm, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("opencryptoki: re-initialising the soft token: %w", err)
	}
	return nil
}

// ockSoftSlot finds the slot of the soft token.
func ockSoftSlot(p *pkcs11.Ctx) (uint, pkcs11.TokenInfo, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("opencryptoki: C_GetSlotList: %w", err)
	}
	var models []string
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, ti, fmt.Errorf("opencryptoki: C_GetTokenInfo of slot %d: %w", s, err)
		}
		model := strings.TrimRight(ti.Model, " \x00")
		if model == ockModel {
			return s, ti, nil
		}
		models = append(models, fmt.Sprintf("slot %d: %q", s, model))
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("opencryptoki: no slot holds the soft token (model %q; found %v): "+
		"is libpkcs11_sw.so in /etc/opencryptoki/opencryptoki.conf?", ockModel, models)
}
