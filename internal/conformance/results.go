// Package conformance is mp-hsm's PKCS#11 conformance suite: the same
// tests, in its _test files, run against every backend package backends
// can start (SoftHSM2 alone, through p11-kit's proxy and through
// pkcs11-spy, tpm2-pkcs11 on swtpm, opencryptoki's soft token), through
// the project's own packages (hsm, signer/p11) and the mp-hsm binary.
//
// Each test's outcome is a Result. When MP_HSM_COMPAT_OUT names a file,
// the suite writes the results there as JSON lines, and the command
// compatreport renders docs/COMPATIBILITY.md from that file.
package conformance

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
)

// The values of Result.Result.
const (
	// OK: the feature works on the backend.
	OK = "ok"
	// Unsupported: the token lacks what the feature needs (a mechanism
	// missing from C_GetMechanismList); mp-hsm is not at fault.
	Unsupported = "not supported by this token"
	// Failed: the feature does not work; the note says what happened.
	Failed = "failed"
)

// Result is one feature's outcome on one backend: a line of the results
// file.
type Result struct {
	Backend string `json:"backend"`
	Version string `json:"version,omitempty"`
	Feature string `json:"feature"`
	Result  string `json:"result"`
	// Note is what a user should know of this outcome: the PIN flags
	// seen, why a feature is unsupported, the error of a failure.
	Note string `json:"note,omitempty"`
	// Notes, on a backend's "start" result, are the backend's notes for
	// its users (backends.Running.Notes).
	Notes []string `json:"notes,omitempty"`
}

// Feature is a feature the suite tests.
type Feature struct {
	Name        string
	Description string
}

// Features are the features the suite tests, in the order it tests them
// and docs/COMPATIBILITY.md lists them.
var Features = []Feature{
	{"start", "backend set up: token initialised, keys generated, certificates written"},
	{"key-protection", "the generated private key is sensitive and not extractable"},
	{"login", "login with the right PIN"},
	{"list", "listing: slots, tokens, keys and certificates"},
	{"select-slot", "token selection by slot ID"},
	{"select-label", "token selection by label"},
	{"select-serial", "token selection by serial"},
	{"select-id", "key selection by CKA_ID and by CKA_LABEL"},
	{"select-uri", "token and key selection by a pkcs11: URI (RFC 7512)"},
	{"RS256", "RS256 signature (CKM_RSA_PKCS, SHA-256)"},
	{"RS384", "RS384 signature (CKM_RSA_PKCS, SHA-384)"},
	{"RS512", "RS512 signature (CKM_RSA_PKCS, SHA-512)"},
	{"PS256", "PS256 signature (CKM_RSA_PKCS_PSS)"},
	{"ES256", "ES256 signature (CKM_ECDSA, P-256 key generated on the token)"},
	{"always-authenticate", "a CKA_ALWAYS_AUTHENTICATE key signs (context-specific login)"},
	{"chain", "the certificate chain read from the token"},
	{"concurrent-64", "64 goroutines signing at once through one signer"},
	{"after-failed-signature", "after a failed signature the next one succeeds (no CKR_OPERATION_ACTIVE)"},
	{"mp-hsm-token", "a whole `mp-hsm token` run against the emulator"},
	{"mp-hsm-serve", "`mp-hsm serve` on a unix socket: a token fetched through it"},
	{"p11-kit-neighbours", "`mp-hsm token` through p11-kit's proxy with this token's settings alone, the other registered modules unconfigured"},
	{"wrong-pin", "a wrong PIN (mp-hsm token): exit 3 and exactly one C_Login, counted with pkcs11-spy"},
	{"pin-flags", "the PIN flags the token reports after one wrong PIN"},
	{"doctor", "`mp-hsm doctor` against the emulator: every check passes"},
	{"final-try", "the right PIN with one try left: refused with no C_Login (card)"},
	{"locked", "a blocked PIN: refused with no C_Login (card)"},
	{"slow-card", "`mp-hsm token` on a card that takes 50 ms per APDU"},
	{"pull-idle", "card pulled while `mp-hsm serve` is idle: not ready within 5 s; ready within 2 s after re-insertion; the next uncached request succeeds"},
	{"pull-signing", "card pulled while `mp-hsm serve` signs: the request is answered (200 or 503); then as pull-idle"},
	{"pcscd-restart", "pcscd restarted while `mp-hsm serve` is idle: ready within 2 s; the next uncached request succeeds"},
	{"hsm-faults", "`mp-hsm serve` on a network HSM whose server is killed while idle (not ready within 5 s) and while signing (the request made again after the reconnect), restarted (ready within 2 s), and a slow link"},
}

// Recorder appends Results to a file as JSON lines. Safe for concurrent
// use. The zero Recorder, and a nil one, discard.
type Recorder struct {
	mu sync.Mutex
	f  *os.File
}

// NewRecorder creates (truncating) the results file path; an empty path
// gives a Recorder that discards.
func NewRecorder(path string) (*Recorder, error) {
	if path == "" {
		return &Recorder{}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("conformance results: %w", err)
	}
	return &Recorder{f: f}, nil
}

// Record writes res as one line.
func (rec *Recorder) Record(res Result) error {
	if rec == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("conformance results: %w", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.f == nil {
		return nil
	}
	if _, err := rec.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("conformance results: %w", err)
	}
	return nil
}

// Close closes the file.
func (rec *Recorder) Close() error {
	if rec == nil {
		return nil
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.f == nil {
		return nil
	}
	err := rec.f.Close()
	rec.f = nil
	return err
}

// ReadResults reads a results file's JSON lines.
func ReadResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var res Result
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if res.Backend == "" || res.Feature == "" || res.Result == "" {
			return nil, fmt.Errorf("line %d: backend, feature and result are required", n)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}
