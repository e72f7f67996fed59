//go:build cgo

package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// The PINs of the SoftHSM2-based backends' tokens. They protect
// throwaway tokens; they are distinctive so that a test can look for them
// in output that must not show a PIN.
const (
	softPIN   = "Conf-PIN-51f3a7"
	softSOPIN = "Conf-SO-PIN-9b02c4"
)

// store is the one SoftHSM2 store of the process, shared by the backends
// built on SoftHSM2 (softhsm2, p11-kit-proxy, pkcs11-spy): SoftHSM2 reads
// SOFTHSM2_CONF once per process, and p11-kit and pkcs11-spy load the same
// libsofthsm2.so into the process, so there can be only one. It lives in a
// directory of its own, removed when the last backend using it stops.
var store struct {
	mu    sync.Mutex
	s     *softhsm.Store
	dir   string
	users int
	err   error // a store that could not be opened is not retried
}

// softToken initialises a new token labelled label in the process's
// SoftHSM2 store, opening the store on first use, and returns it with the
// function that releases the store (removing it after the last release).
func softToken(label string) (*softhsm.Token, func() error, error) {
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.err != nil {
		return nil, nil, store.err
	}
	if store.s == nil {
		dir, err := os.MkdirTemp("", "mp-hsm-backends-softhsm-")
		if err != nil {
			return nil, nil, fmt.Errorf("softhsm2 store: %w", err)
		}
		s, err := softhsm.OpenStore(dir)
		if err != nil {
			os.RemoveAll(dir)
			store.err = fmt.Errorf("softhsm2 store: %w", err)
			return nil, nil, store.err
		}
		store.s, store.dir = s, dir
	}
	tok, err := store.s.InitToken(label, softPIN, softSOPIN)
	if err != nil {
		return nil, nil, err
	}
	store.users++
	var once sync.Once
	release := func() error {
		var err error
		once.Do(func() {
			store.mu.Lock()
			defer store.mu.Unlock()
			if store.users--; store.users == 0 {
				// SoftHSM2 stays initialised with this store in the
				// process: later Starts fail rather than see a removed
				// directory.
				err = os.RemoveAll(store.dir)
				store.err = errors.New("softhsm2 store: this process's store was removed when its last backend stopped; SoftHSM2 reads its configuration once per process")
			}
		})
		return err
	}
	return tok, release, nil
}

// softRunning is the Running of a backend on the SoftHSM2 token tok.
func softRunning(name, module string, tok *softhsm.Token, release func() error, pkgs ...string) (*Running, error) {
	version, err := debPackages(pkgs...)
	if err != nil {
		release()
		return nil, err
	}
	r := &Running{
		Name: name, Version: version, Module: module,
		Env:   []string{"SOFTHSM2_CONF=" + tok.Config},
		Label: tok.Label, Serial: tok.Serial, PIN: tok.PIN, SOPIN: tok.SOPIN,
	}
	r.onStop(release)
	return r, nil
}

// StartSoftHSM starts SoftHSM2: a token in the process's SoftHSM2 store
// (shared with StartP11KitProxy and StartSpy, see softToken), reached
// through libsofthsm2.so itself. SoftHSM2 runs no daemon; dir is not used.
func StartSoftHSM(dir string) (*Running, error) {
	tok, release, err := softToken("conf-softhsm2")
	if err != nil {
		return nil, fmt.Errorf("softhsm2: %w", err)
	}
	r, err := softRunning("softhsm2", tok.Module, tok, release, "softhsm2", "libsofthsm2")
	if err != nil {
		return nil, fmt.Errorf("softhsm2: %w", err)
	}
	r.Notes = []string{
		"SOFTHSM2_CONF names the token store. SoftHSM2 reads it once, in C_Initialize: a process does not see tokens that other processes create after that.",
		"SoftHSM2's file store is not safe for several processes logging in to one token at once (each login rewrites the token's file).",
	}
	return r, nil
}

// debPackages returns "pkg version, pkg version" for the installed Debian
// packages pkgs, from dpkg-query, for Running.Version.
func debPackages(pkgs ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"-W", "-f", "${Package} ${Version}\n"}, pkgs...)
	out, err := exec.CommandContext(ctx, "dpkg-query", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("dpkg-query %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("dpkg-query %s: %w", strings.Join(pkgs, " "), err)
	}
	return strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ", "), nil
}
