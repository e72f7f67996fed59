//go:build cgo

package backends

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/pkcs11"
)

// When tpmInitVar is set, this program is the token initialiser that
// StartTPM runs as a child process (tpmInitToken): tpmInitVar holds the
// module's path and tpmLabelVar the label; the SO PIN and the user PIN come
// on standard input, one a line. It prints "serial=<serial>" and exits.
const (
	tpmInitVar  = "MP_HSM_BACKENDS_TPM_INIT"
	tpmLabelVar = "MP_HSM_BACKENDS_TPM_LABEL"
)

func init() {
	module := os.Getenv(tpmInitVar)
	if module == "" {
		return
	}
	serial, err := tpmInitChild(module, os.Getenv(tpmLabelVar), os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tpm2-pkcs11 token initialiser:", err)
		os.Exit(1)
	}
	fmt.Println("serial=" + serial)
	os.Exit(0)
}

// tpmInitChild initialises the module's first uninitialised token (the one
// tpm2-pkcs11 offers in an empty store) with label, an SO PIN and a user
// PIN: C_InitToken, then C_InitPIN in a read-write session of the SO. It
// returns the token's serial.
func tpmInitChild(module, label string, pins *os.File) (serial string, err error) {
	sopin, pin, err := tpmReadPINs(pins)
	if err != nil {
		return "", err
	}
	p := pkcs11.New(module)
	if p == nil {
		return "", fmt.Errorf("cannot load %s", module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		return "", fmt.Errorf("C_Initialize: %w", err)
	}
	defer func() { err = errors.Join(err, p.Finalize()) }()
	slots, err := p.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("C_GetSlotList: %w", err)
	}
	slot, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return "", fmt.Errorf("C_GetTokenInfo(slot %d): %w", s, err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			slot, found = s, true
			break
		}
	}
	if !found {
		return "", fmt.Errorf("no uninitialised token among slots %v", slots)
	}
	if err := p.InitToken(slot, sopin, label); err != nil {
		return "", fmt.Errorf("C_InitToken(slot %d): %w", slot, err)
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return "", fmt.Errorf("C_OpenSession: %w", err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_SO, sopin); err != nil {
		return "", fmt.Errorf("C_Login(CKU_SO): %w", err)
	}
	if err := p.InitPIN(sh, pin); err != nil {
		return "", fmt.Errorf("C_InitPIN: %w", err)
	}
	if err := p.Logout(sh); err != nil {
		return "", fmt.Errorf("C_Logout: %w", err)
	}
	ti, err := p.GetTokenInfo(slot)
	if err != nil {
		return "", fmt.Errorf("C_GetTokenInfo(slot %d): %w", slot, err)
	}
	return strings.TrimSpace(ti.SerialNumber), nil
}

// tpmReadPINs reads the SO PIN and the user PIN, one a line, from the
// initialiser's standard input.
func tpmReadPINs(f *os.File) (sopin, pin string, err error) {
	sc := bufio.NewScanner(f)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 2 {
		return "", "", errors.New("expected the SO PIN and the user PIN on standard input")
	}
	return lines[0], lines[1], nil
}
