//go:build cgo

package backends

import (
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// The card's PIN: a CAC PIN is at most 8 characters (OpenSC pads it to 8
// with 0xff). It is also the password of the card's NSS database, which
// libcacard's VERIFY checks.
const cardPIN = "Cd-7e2a1"

// cardReader is the reader name the bridge gives libcacard; pcscd names
// its reader from reader.conf's FRIENDLYNAME.
const cardReader = "mp-hsm card"

// vpcdPort is vpcd's port, its default: pcscd and the bridge share a
// network namespace of their own, so no other process can hold it.
const vpcdPort = 35963

//go:embed csrc/cardbridge.c
var cardBridgeSource []byte

// OpenSCPath returns the path of OpenSC's PKCS#11 module on this machine.
func OpenSCPath() string { return "/usr/lib/" + hsm.Multiarch() + "/opensc-pkcs11.so" }

// StartCard starts a smart card reached as users reach theirs: OpenSC's
// opensc-pkcs11.so, through libpcsclite, to a pcscd of its own, whose
// vsmartcard vpcd reader driver holds libcacard's virtual CAC card (through
// cardbridge, built here from csrc/cardbridge.c with gcc). The card holds
// an RSA 2048 key generated in its NSS database (dir/nssdb, the card's
// store) with a leaf certificate ca issued for it, and ca's intermediate.
//
// pcscd 1.9.9 serves only /run/pcscd/pcscd.comm (PCSCLITE_CSOCK_NAME is
// read by clients alone), so the bridge runs in a mount and network
// namespace of its own, in which dir/run is mounted over /run/pcscd, and
// pcscd is started in the same namespaces: the socket is dir/run/pcscd.comm
// outside, which Env names for clients, and vpcd's port is private.
//
// The card cannot generate keys or take objects through PKCS#11: the
// Running's Card field holds its key, certificates and the controls of the
// fault tests (Card.Remove, Card.Insert, Card.SetDelay, Card.SetTries,
// Card.RestartPCSCD).
func StartCard(dir string, ca *softhsm.CA) (*Running, error) {
	r, err := startCard(dir, ca)
	if err != nil {
		if r != nil {
			r.Stop()
		}
		return nil, fmt.Errorf("card: %w", err)
	}
	return r, nil
}

func startCard(dir string, ca *softhsm.CA) (*Running, error) {
	if ca == nil {
		return nil, errors.New("no CA given to issue the card's certificate")
	}
	need := map[string]string{
		"/usr/sbin/pcscd": "pcscd", "certutil": "libnss3-tools", "gcc": "gcc", "unshare": "util-linux", "nsenter": "util-linux",
		vpcdDriver: "vsmartcard-vpcd", "/usr/include/cacard/libcacard.h": "libcacard-dev", OpenSCPath(): "opensc-pkcs11",
	}
	for path, pkg := range need {
		if _, err := lookPath(path); err != nil {
			return nil, fmt.Errorf("%w (apt-get install %s, or make deps)", err, pkg)
		}
	}
	version, err := debPackages("opensc-pkcs11", "pcscd", "vsmartcard-vpcd", "libcacard0")
	if err != nil {
		return nil, err
	}
	r := &Running{Name: "card", Version: version, Module: OpenSCPath(), PIN: cardPIN}
	bridge, err := buildBridge(dir)
	if err != nil {
		return r, err
	}
	key, err := makeCardStore(filepath.Join(dir, "nssdb"), ca)
	if err != nil {
		return r, err
	}
	c := &Card{dir: dir, Key: key, Intermediate: ca.Intermediate}
	r.Card = c
	run := filepath.Join(dir, "run")
	r.Env = []string{"PCSCLITE_CSOCK_NAME=" + filepath.Join(run, "pcscd.comm")}
	if err := c.start(r, bridge); err != nil {
		return r, err
	}
	if r.Label, r.Serial, err = c.token(r.Env); err != nil {
		return r, err
	}
	r.Notes = []string{
		"OpenSC's CAC driver reports no CKF_USER_PIN_COUNT_LOW after a wrong PIN; CKF_USER_PIN_FINAL_TRY with one try left and CKF_USER_PIN_LOCKED with none.",
		"A CAC PIN is at most 8 characters. The card holds its keys and certificates from its issuing; OpenSC offers no key generation or object writing on it.",
		"The virtual card: libcacard's CAC emulation behind vsmartcard's vpcd driver in pcscd, with a PIN retry counter (3 tries) kept by the test's bridge, since libcacard has none.",
	}
	return r, nil
}

// vpcdDriver is vsmartcard's reader driver for pcscd.
const vpcdDriver = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

// lookPath finds a command on PATH, or checks that an absolute path exists.
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		_, err := os.Stat(name)
		return name, err
	}
	return exec.LookPath(name)
}

// buildBridge compiles cardbridge into dir.
func buildBridge(dir string) (string, error) {
	src := filepath.Join(dir, "cardbridge.c")
	if err := os.WriteFile(src, cardBridgeSource, 0o600); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cardbridge")
	glib := "/usr/lib/" + hsm.Multiarch() + "/glib-2.0/include"
	out, err := tpmRun(os.Environ(), []string{"gcc", "-O2", "-Wall", "-Werror", "-o", bin, src,
		"-I/usr/include/cacard", "-I/usr/include/glib-2.0", "-I" + glib, "-I/usr/include/nss", "-I/usr/include/nspr",
		"-lcacard", "-lglib-2.0"})
	if err != nil {
		return "", fmt.Errorf("building the bridge: %w\n%s", err, out)
	}
	return bin, nil
}

// CardKey is the key the card was issued with.
type CardKey struct {
	// ID and Label are the key's CKA_ID and CKA_LABEL as OpenSC shows
	// them: the CAC's first certificate slot.
	ID    []byte
	Label string
	// Cert is its leaf certificate, issued by the suite's CA.
	Cert *x509.Certificate
}

// makeCardStore makes the card's NSS database in db, its password the
// card's PIN: an RSA 2048 key generated in it (certutil -R), the leaf
// certificate ca issues for it as "cert1" and ca's intermediate as
// "cert2", the certificates the bridge gives the card.
func makeCardStore(db string, ca *softhsm.CA) (CardKey, error) {
	var key CardKey
	if err := os.MkdirAll(db, 0o700); err != nil {
		return key, err
	}
	pw := filepath.Join(db, "pin")
	noise := filepath.Join(db, "noise")
	csr := filepath.Join(db, "csr.der")
	defer os.Remove(pw)
	defer os.Remove(noise)
	defer os.Remove(csr)
	seed := make([]byte, 64) // certutil -R wants a noise file
	if _, err := rand.Read(seed); err != nil {
		return key, err
	}
	if err := errors.Join(os.WriteFile(pw, []byte(cardPIN), 0o600), os.WriteFile(noise, seed, 0o600)); err != nil {
		return key, err
	}
	sql := "sql:" + db
	certutil := func(args ...string) error {
		out, err := tpmRun(os.Environ(), append([]string{"certutil", "-d", sql, "-f", pw}, args...))
		if err != nil {
			return fmt.Errorf("certutil %s: %w\n%s", args[0], err, out)
		}
		return nil
	}
	if err := certutil("-N"); err != nil {
		return key, err
	}
	if err := certutil("-R", "-s", "CN=mp-hsm card", "-k", "rsa", "-g", "2048", "-z", noise, "-o", csr); err != nil {
		return key, err
	}
	der, err := os.ReadFile(csr)
	if err != nil {
		return key, err
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return key, fmt.Errorf("the card's certificate request: %w", err)
	}
	if key.Cert, err = ca.IssueLeaf(req.PublicKey, softhsm.LeafOptions{Usage: softhsm.Authentication}); err != nil {
		return key, err
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{{"cert1", key.Cert}, {"cert2", ca.Intermediate}} {
		f := filepath.Join(db, c.name+".der")
		if err := os.WriteFile(f, c.cert.Raw, 0o600); err != nil {
			return key, err
		}
		if err := certutil("-A", "-n", c.name, "-t", ",,", "-i", f); err != nil {
			return key, err
		}
	}
	key.ID, key.Label = []byte{0x00, 0x01}, "CAC ID Certificate"
	return key, nil
}

var (
	tokenLabelRE  = regexp.MustCompile(`(?m)^\s*token label\s*:\s*(.*?)\s*$`)
	tokenSerialRE = regexp.MustCompile(`(?m)^\s*serial num\s*:\s*(.*?)\s*$`)
)

// token waits until OpenSC shows the card (pkcs11-tool -L with env), and
// returns its label and serial.
func (c *Card) token(env []string) (label, serial string, err error) {
	deadline := time.Now().Add(tpmStepTimeout)
	for {
		out, err := tpmRun(append(os.Environ(), env...), []string{"pkcs11-tool", "--module", OpenSCPath(), "-L"})
		l, s := tokenLabelRE.FindStringSubmatch(out), tokenSerialRE.FindStringSubmatch(out)
		if err == nil && l != nil && s != nil {
			return l[1], s[1], nil
		}
		if err := c.exited(); err != nil {
			return "", "", err
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("OpenSC shows no card after %v (%v): %s\npcscd: %s\nbridge: %s",
				tpmStepTimeout, err, strings.TrimSpace(out), c.pcscd.tail(), c.bridge.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
