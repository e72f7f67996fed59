//go:build cgo

package backends

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// The TPM token's label and PINs. They protect a throwaway token only.
const (
	tpmLabel = "mp-hsm tpm2"
	tpmPIN   = "123456"
	tpmSOPIN = "12345678"
)

// tpmStepTimeout bounds each start-up command and each wait for a daemon.
const tpmStepTimeout = 30 * time.Second

// tpmBusNames makes each instance's tpm2-abrmd bus name unique in the process.
var tpmBusNames atomic.Int64

// StartTPM starts tpm2-pkcs11 (libtpm2-pkcs11-1) on a software TPM, the way
// a fresh Debian 12 machine runs it, with everything in dir:
//
//   - swtpm, a TPM 2.0 simulator, on a unix socket, its state in dir/tpm;
//   - a private D-Bus bus (dbus-daemon on dir/bus) for tpm2-abrmd, the
//     resource manager: without one, tpm2-pkcs11 leaves transient objects
//     loaded in the TPM until it has no room left (TPM_RC_OBJECT_MEMORY,
//     0x902);
//   - the TPM's dictionary-attack lockout relaxed (tpm2_dictionarylockout),
//     so that wrong-PIN tests cannot lock the TPM;
//   - a token initialised through the module itself (C_InitToken,
//     C_InitPIN) in the store dir/store.
//
// Env carries what a process loading the module needs: TPM2_PKCS11_TCTI
// and TPM2TOOLS_TCTI (tpm2-abrmd on the private bus), DBUS_SESSION_BUS_ADDRESS
// and TPM2_PKCS11_STORE (which also keeps tpm2-pkcs11 from creating
// ~/.tpm2_pkcs11). tpm2-pkcs11 reads them in C_Initialize, so one process
// can use one StartTPM backend at a time.
//
// The daemons are child processes in process groups of their own, killed
// when this process dies (SIGKILL as parent-death signal) or by Stop.
func StartTPM(dir string) (_ *Running, err error) {
	need, err := tpmFind()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil { // the daemons run in dir
		return nil, fmt.Errorf("tpm2-pkcs11: %w", err)
	}
	for _, sub := range []string{"tpm", "store"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("tpm2-pkcs11: %w", err)
		}
	}
	tpmSock := filepath.Join(dir, "tpm", "swtpm.sock")
	busSock := filepath.Join(dir, "bus")
	if len(tpmSock)+len(".ctrl") >= 108 {
		return nil, fmt.Errorf("tpm2-pkcs11: directory %s is too long for a unix socket path", dir)
	}
	busName := fmt.Sprintf("com.intel.tss2.Tabrmd.mphsm%d_%d", os.Getpid(), tpmBusNames.Add(1))
	tcti := "tabrmd:bus_type=session,bus_name=" + busName
	version := make(chan string, 1) // dpkg-query meanwhile
	go func() { version <- tpmVersions("libtpm2-pkcs11-1", "swtpm", "tpm2-abrmd") }()
	r := &Running{
		Name:   "tpm2-pkcs11",
		Module: need["module"],
		Env: []string{
			"TPM2_PKCS11_TCTI=" + tcti,
			"TPM2TOOLS_TCTI=" + tcti,
			"DBUS_SESSION_BUS_ADDRESS=unix:path=" + busSock,
			"TPM2_PKCS11_STORE=" + filepath.Join(dir, "store"),
		},
		Label: tpmLabel,
		PIN:   tpmPIN,
		SOPIN: tpmSOPIN,
		Notes: tpmNotes,
	}
	defer func() {
		if err != nil { // every return below returns nil and err
			err = errors.Join(err, r.Stop())
		}
	}()
	// Child processes get PATH (for the tools' own helpers) and r.Env;
	// HOME is dir, so that nothing lands in the caller's home.
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, r.Env...)

	swtpm, err := tpmDaemon(r, dir, "swtpm", env, need["swtpm"], "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(dir, "tpm"),
		"--server", "type=unixio,path="+tpmSock,
		"--ctrl", "type=unixio,path="+tpmSock+".ctrl",
		"--flags", "not-need-init,startup-clear")
	if err != nil {
		return nil, err
	}
	if err := swtpm.waitSocket(tpmSock); err != nil {
		return nil, err
	}

	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(tpmBusConfig(busSock)), 0o600); err != nil {
		return nil, fmt.Errorf("tpm2-pkcs11: %w", err)
	}
	bus, err := tpmDaemon(r, dir, "dbus-daemon", env, need["dbus-daemon"], "--nofork", "--config-file="+conf)
	if err != nil {
		return nil, err
	}
	if err := bus.waitSocket(busSock); err != nil {
		return nil, err
	}

	abrmdArgs := []string{"--session", "--dbus-name=" + busName, "--tcti=swtpm:path=" + tpmSock}
	if os.Geteuid() == 0 {
		abrmdArgs = append(abrmdArgs, "--allow-root") // it refuses to run as root otherwise
	}
	abrmd, err := tpmDaemon(r, dir, "tpm2-abrmd", env, need["tpm2-abrmd"], abrmdArgs...)
	if err != nil {
		return nil, err
	}
	// tpm2-abrmd is ready once it owns its bus name: until then the first
	// TPM command fails at once, so it is tried again until it works.
	lockout := []string{need["tpm2_dictionarylockout"], "--setup-parameters",
		"--max-tries=1000", "--recovery-time=1", "--lockout-recovery-time=1", "--clear-lockout"}
	if err := abrmd.retry(env, lockout); err != nil {
		return nil, err
	}

	serial, err := tpmInitToken(r, env)
	if err != nil {
		return nil, err
	}
	r.Serial = serial
	r.Version = <-version
	return r, nil
}

// tpmNotes are what a user of tpm2-pkcs11 must know, for COMPATIBILITY.md.
// tpm_test.go checks what they say of the token's flags, the lockout,
// key sizes, RSA-PSS and CKR_OPERATION_ACTIVE; the 0x902 without
// a resource manager was seen by hand (five keys signing in one process
// on swtpm directly: the third key's Esys_Load failed).
var tpmNotes = []string{
	"Needs a resource manager: tpm2-pkcs11 keeps each key it has used loaded in the TPM, which holds only a few " +
		"objects (swtpm: 3, the primary key included), so talking to the TPM directly the third key fails " +
		"(TPM_RC_OBJECT_MEMORY, 0x902). On a machine with a TPM it finds the kernel's, " +
		"/dev/tpmrm0 (group tss), by itself; tpm2-abrmd needs libtss2-tcti-tabrmd0, which tpm2-abrmd does not pull in " +
		"(here: swtpm behind tpm2-abrmd on a private D-Bus bus, TPM2_PKCS11_TCTI=tabrmd:bus_type=session,bus_name=...).",
	"The token never reports a wrong PIN in its flags (no count-low, final-try or locked). Each wrong PIN counts " +
		"towards the TPM's dictionary-attack lockout instead (swtpm's default: 3 tries, then 1000 s; relaxed here " +
		"with tpm2_dictionarylockout). In the lockout every PIN, the right one and the SO PIN too, gets " +
		"CKR_PIN_LOCKED, still without the flag, until the recovery time has passed or tpm2_dictionarylockout " +
		"--clear-lockout; mp-hsm says so instead of pointing to a PUK. A wrong PIN also prints " +
		"tpm2-pkcs11's and the TSS's errors on stderr (TSS2_LOG=all+NONE silences the TSS's, not tpm2-pkcs11's).",
	"RSA keys of 1024 to 3072 bits (RSA-4096: CKR_ATTRIBUTE_VALUE_INVALID) and EC P-256. RSA PKCS #1 v1.5 and ECDSA " +
		"sign; RSA-PSS is not offered (no CKM_RSA_PKCS_PSS in C_GetMechanismList on swtpm). tpm2-pkcs11 reads the " +
		"caller's CK_RSA_PKCS_PSS_PARAMS again in C_Sign, so a caller must keep them until C_Sign returns " +
		"(github.com/miekg/pkcs11 frees its copy after C_SignInit: CKR_MECHANISM_INVALID); mp-hsm keeps them.",
	"After a C_Sign without the context login that CKA_ALWAYS_AUTHENTICATE asks for (CKR_USER_NOT_LOGGED_IN), " +
		"the operation stays active: the next C_SignInit on that session gets CKR_OPERATION_ACTIVE. mp-hsm replaces " +
		"a session whose signature failed.",
	"tpm2-pkcs11 reads TPM2_PKCS11_STORE (its SQLite store) and TPM2_PKCS11_TCTI in C_Initialize, so a process " +
		"sees one store; without TPM2_PKCS11_STORE it uses /etc/tpm2_pkcs11 or creates ~/.tpm2_pkcs11. " +
		"Installing libtpm2-pkcs11-1 registers it with p11-kit, so p11-kit's proxy loads it too.",
}

// tpmFind returns the paths of what StartTPM runs, or an error naming the
// Debian packages that are missing.
func tpmFind() (map[string]string, error) {
	found := map[string]string{}
	var missing []string
	for _, n := range []struct{ name, pkg string }{
		{"swtpm", "swtpm"},
		{"dbus-daemon", "dbus-daemon"},
		{"tpm2-abrmd", "tpm2-abrmd"},
		{"tpm2_dictionarylockout", "tpm2-tools"},
	} {
		p, err := exec.LookPath(n.name)
		if err != nil {
			// tpm2-abrmd is in /usr/sbin, which a user's PATH may lack.
			if _, err2 := os.Stat("/usr/sbin/" + n.name); err2 == nil {
				p, err = "/usr/sbin/"+n.name, nil
			}
		}
		if err != nil {
			missing = append(missing, n.name+" ("+n.pkg+")")
			continue
		}
		found[n.name] = p
	}
	lib := "/usr/lib/" + hsm.Multiarch()
	for _, f := range []struct{ key, path, pkg string }{
		{"module", lib + "/pkcs11/libtpm2_pkcs11.so", "libtpm2-pkcs11-1"},
		{"tcti-tabrmd", lib + "/libtss2-tcti-tabrmd.so.0", "libtss2-tcti-tabrmd0"},
		{"tcti-swtpm", lib + "/libtss2-tcti-swtpm.so.0", "libtss2-tcti-swtpm0"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			missing = append(missing, f.path+" ("+f.pkg+")")
			continue
		}
		found[f.key] = f.path
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("tpm2-pkcs11: not installed: %s", strings.Join(missing, ", "))
	}
	return found, nil
}

// tpmBusConfig is a D-Bus bus of this process's own on socket path: it
// lets its clients (tpm2-abrmd and the module's TCTI) own names and talk to
// each other, and starts no services.
func tpmBusConfig(path string) string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=`)
	b.WriteString(path)
	b.WriteString(`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`)
	return b.String()
}

// tpmVersions returns "pkg version, pkg version" from dpkg-query, or what
// dpkg-query said when it failed.
func tpmVersions(pkgs ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), tpmStepTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg-query", append([]string{"-W", "-f", "${Package} ${Version}\n"}, pkgs...)...).Output()
	if err != nil {
		return fmt.Sprintf("%s (dpkg-query: %v)", strings.Join(pkgs, ", "), err)
	}
	return strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ", ")
}

// tpmInitToken initialises the module's free token, with tpmLabel and the
// PINs, in a child process: tpm2-pkcs11 reads its store and TCTI once per
// process, in C_Initialize, and this process may have loaded it already. The
// child is this program again (see tpmInitChild); the PINs reach it on its
// standard input, never in its arguments. It returns the token's serial.
func tpmInitToken(r *Running, env []string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("tpm2-pkcs11: initialising the token: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tpmStepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(append([]string{}, env...), tpmInitVar+"="+r.Module, tpmLabelVar+"="+r.Label)
	cmd.Stdin = strings.NewReader(r.SOPIN + "\n" + r.PIN + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	tpmProcAttr(cmd)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("tpm2-pkcs11: initialising the token (C_InitToken, C_InitPIN in a child process): %w\n%s%s", err, stdout.String(), stderr.String())
	}
	serial, ok := strings.CutPrefix(strings.TrimSpace(tpmLastLine(stdout.String())), "serial=")
	if !ok {
		return "", fmt.Errorf("tpm2-pkcs11: the token initialiser printed no serial:\n%s%s", stdout.String(), stderr.String())
	}
	return serial, nil
}

func tpmLastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
