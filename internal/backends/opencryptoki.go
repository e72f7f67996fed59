//go:build cgo

package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// opencryptoki's soft token has its paths compiled in: its configuration
// in /etc/opencryptoki, its token store in /var/lib/opencryptoki/swtok,
// pkcsslotd's socket and pid file in /var/run. There is one soft token per
// machine, and one pkcsslotd.
const (
	ockDaemon  = "/usr/sbin/pkcsslotd"
	ockPIDFile = "/var/run/pkcsslotd.pid"
	// ockLockFile serialises the processes that use the soft token: a
	// test process holds it (flock) from StartOpenCryptoki to Stop, and
	// keeps in it the pid of the pkcsslotd it started, so that the next
	// holder can end a pkcsslotd left behind by a killed test.
	ockLockFile = "/run/lock/mp-hsm-opencryptoki.lock"
	// ockModel is the CKA_MODEL of the soft token (the sw STDLL), which
	// Debian's opencryptoki.conf puts in slot 3.
	ockModel = "IBM SoftTok"
	// ockLabel marks the soft token as ours: StartOpenCryptoki
	// re-initialises (wipes) only a token that is not initialised or has
	// this label.
	ockLabel = "mp-hsm-ock"
	// The soft token takes PINs of 4 to 8 bytes.
	ockPIN          = "ock-user"
	ockSOPIN        = "ock-so-1"
	ockDefaultSOPIN = "87654321" // the SO PIN of a soft token never initialised
)

// ockNotes are what a user of opencryptoki's soft token must know, each
// proven by opencryptoki_test.go or seen in opencryptoki 3.8.1's source.
var ockNotes = []string{
	"Paths are compiled in (/etc/opencryptoki, /var/lib/opencryptoki/swtok, /var/run/pkcsslotd.socket): " +
		"one soft token per machine, behind one pkcsslotd.",
	"pkcsslotd must run, started by root (systemctl start pkcsslotd). A user who is not root must be listed as a " +
		"member of group pkcs11 in /etc/group (usermod -aG pkcs11 USER): opencryptoki reads the member list, so the " +
		"group as primary group or through newgrp does not count, and C_Initialize fails with CKR_HOST_MEMORY.",
	"PIN counters are real: count-low after 1 wrong PIN, final try after 2, locked after 3 " +
		"(mp-hsm then refuses to try a PIN before the last try); the SO unlocks with C_InitPIN.",
	"No EC: CKM_EC_KEY_PAIR_GEN is not in the mechanism list (CKR_MECHANISM_INVALID). " +
		"RSA signs with CKM_RSA_PKCS and CKM_RSA_PKCS_PSS; CKM_SHA256_RSA_PKCS is not listed.",
	"A private key made from a template that does not say otherwise is stored extractable, not sensitive and " +
		"not CKA_PRIVATE (its private exponent can be read): set CKA_SENSITIVE, CKA_EXTRACTABLE=false and " +
		"CKA_PRIVATE explicitly, as mp-hsm's key generation does; then it is stored as asked.",
	"CKA_ALWAYS_AUTHENTICATE is stored but not enforced, and C_Login(CKU_CONTEXT_SPECIFIC) is refused with " +
		"CKR_USER_TYPE_INVALID before the PIN is looked at: mp-hsm then signs without a context login, " +
		"spending no PIN try.",
	"PINs are 4 to 8 bytes.",
	"C_InitToken (pkcsconf -I) keeps the SO PIN it is given but encrypts the SO's master key under the default " +
		"SO PIN (87654321): re-initialise with the default SO PIN and change it afterwards (C_SetPIN, pkcsconf -P), " +
		"or the SO can no longer log in (CKR_FUNCTION_FAILED).",
}

// ockLockWait is how long StartOpenCryptoki waits for another process's
// use of the soft token to end.
const ockLockWait = 5 * time.Minute

// OpenCryptokiModule returns the path of opencryptoki's PKCS#11 module on
// this machine (Debian's multiarch directory).
func OpenCryptokiModule() string {
	return "/usr/lib/" + hsm.Multiarch() + "/pkcs11/libopencryptoki.so"
}

// StartOpenCryptoki brings up opencryptoki's soft token: it takes the
// machine-wide lock file (waiting for another process's Running to stop),
// starts pkcsslotd unless one is already running (the system's service:
// then it is used and left running), and re-initialises the soft token:
// it deletes the token's store, every object on it included, and sets it
// up again through PKCS#11 (see ockInitToken) with its label and PINs. A
// soft token that was initialised with another label is someone's: Start
// refuses to wipe it.
//
// Starting pkcsslotd needs root. A user that is not root can use a
// pkcsslotd that root started (systemctl start pkcsslotd) when the user is
// listed as a member of group pkcs11 in /etc/group (see ockNotes); the
// group owns /var/lib/opencryptoki, /run/lock/opencryptoki and pkcsslotd's
// socket and shared memory.
//
// A test binary whose TestMain calls Private runs, as root, in a mount
// namespace of its own where all of that is empty: its own pkcsslotd and
// soft token, and its own lock file, so that the machine's token is never
// touched and test binaries do not wait for one another.
//
// dir receives pkcsslotd's output (pkcsslotd.log).
func StartOpenCryptoki(dir string) (*Running, error) {
	r := &Running{
		Name:   "opencryptoki",
		Module: OpenCryptokiModule(),
		Label:  ockLabel,
		PIN:    ockPIN,
		SOPIN:  ockSOPIN,
		Notes:  slices.Clone(ockNotes),
	}
	for _, p := range []string{ockDaemon, r.Module} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("opencryptoki: %w (apt-get install opencryptoki)", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			_ = r.Stop()
		}
	}()
	lock, err := ockLock()
	if err != nil {
		return nil, err
	}
	r.onStop(func() error {
		defer lock.Close()
		_ = lock.Truncate(0)
		return syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	})
	if err := ockDaemonUp(r, dir, lock); err != nil {
		return nil, err
	}
	serial, err := ockInitToken(r.Module)
	if err != nil {
		return nil, err
	}
	r.Serial = serial
	if r.Version, err = ockVersion(); err != nil {
		return nil, err
	}
	ok = true
	return r, nil
}

// ockLock opens and locks ockLockFile, waiting up to ockLockWait.
func ockLock() (*os.File, error) {
	path := ockLockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("opencryptoki: the lock file: %w", err)
	}
	_ = f.Chmod(0o666) // another user's tests may need it; a failure (not the owner) is harmless
	deadline := time.Now().Add(ockLockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			holder := ockLockHolder(f)
			f.Close()
			return nil, fmt.Errorf("opencryptoki: locking %s (process %s uses the soft token): %w", path, holder, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ockLockHolder names the process holding the flock on f, from
// /proc/locks ("1: FLOCK ADVISORY WRITE pid maj:min:inode start end"), or
// says it is unknown.
func ockLockHolder(f *os.File) string {
	st, err := f.Stat()
	if err != nil {
		return "unknown"
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	locks, err := os.ReadFile("/proc/locks")
	if !ok || err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(locks), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 6 && fields[1] == "FLOCK" && strings.HasSuffix(fields[5], ":"+strconv.FormatUint(sys.Ino, 10)) {
			return fields[4]
		}
	}
	return "unknown"
}

// ockLockPath returns ockLockFile, or a file of that name in the
// temporary directory on a machine without /run/lock.
func ockLockPath() string {
	if _, err := os.Stat(filepath.Dir(ockLockFile)); err != nil {
		return filepath.Join(os.TempDir(), filepath.Base(ockLockFile))
	}
	return ockLockFile
}

// ockDaemonUp makes sure one pkcsslotd runs. One that a killed test left
// behind (its pid is in the lock file) is ended and replaced; one that we
// did not start is used as it is. Otherwise pkcsslotd is started and its
// pid, read from its pid file, is written to the lock file and killed by
// Stop.
func ockDaemonUp(r *Running, dir string, lock *os.File) error {
	recorded, _ := os.ReadFile(lock.Name())
	for _, pid := range ockDaemons() {
		if strconv.Itoa(pid) != strings.TrimSpace(string(recorded)) {
			return nil // not ours: used, and left running by Stop
		}
		if err := ockKill(pid); err != nil {
			return fmt.Errorf("opencryptoki: ending the pkcsslotd (pid %d) a killed test left: %w", pid, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("opencryptoki: pkcsslotd is not running, and only root can start it: " +
			"sudo systemctl start pkcsslotd (and be in group pkcs11)")
	}
	// pkcsslotd forks: the parent exits once the shared memory and the
	// socket exist, and the child writes its pid file when it serves.
	_ = os.Remove(ockPIDFile)
	logPath := filepath.Join(dir, "pkcsslotd.log")
	log, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("opencryptoki: %w", err)
	}
	defer log.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ockDaemon)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logPath)
		return fmt.Errorf("opencryptoki: %s: %w: %s", ockDaemon, err, out)
	}
	var pid int
	for pid == 0 {
		if ctx.Err() != nil {
			return fmt.Errorf("opencryptoki: %s wrote no pid file %s", ockDaemon, ockPIDFile)
		}
		if b, err := os.ReadFile(ockPIDFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && ockAlive(p) {
				pid = p
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := lock.WriteAt([]byte(strconv.Itoa(pid)), 0); err != nil {
		_ = ockKill(pid)
		return fmt.Errorf("opencryptoki: recording pkcsslotd's pid: %w", err)
	}
	r.onStop(func() error {
		if err := ockKill(pid); err != nil {
			return fmt.Errorf("opencryptoki: stopping pkcsslotd (pid %d): %w", pid, err)
		}
		return nil
	})
	return nil
}

// ockDaemons returns the pids of the pkcsslotd processes running (not
// zombies) in this process's mount namespace: one in another (the
// machine's, seen from Private's namespace) serves another socket and
// store.
func ockDaemons() []int {
	entries, _ := os.ReadDir("/proc")
	self, _ := os.Readlink("/proc/self/ns/mnt")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !ockAlive(pid) {
			continue
		}
		// Unreadable (another user's process): counted, as before
		// namespaces were looked at.
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && self != "" && ns != self {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// ockAlive reports whether pid is a pkcsslotd that has not exited.
func ockAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(stat)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open || closing+2 >= len(s) {
		return false
	}
	return s[open+1:closing] == "pkcsslotd" && s[closing+2] != 'Z' && s[closing+2] != 'X'
}

// ockKill ends pkcsslotd pid: SIGTERM, which it obeys only when no process
// has opencryptoki initialised, then SIGKILL (the next pkcsslotd reclaims
// the shared memory it leaves). The daemon leads its own session, so its
// process group goes with it.
func ockKill(pid int) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := syscall.Kill(pid, sig); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return nil
			}
			return err
		}
		if sig == syscall.SIGKILL {
			_ = syscall.Kill(-pid, sig)
		}
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if !ockAlive(pid) {
				return nil
			}
		}
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// ockVersion returns the Debian packages' versions, asked once per
// process (dpkg-query takes a quarter of a second on a busy machine).
var ockVersion = sync.OnceValues(ockDpkgVersion)

func ockDpkgVersion() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Package} ${Version}\n",
		"opencryptoki", "libopencryptoki0").Output()
	if err != nil {
		return "", fmt.Errorf("opencryptoki: dpkg-query: %w", err)
	}
	return strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ", "), nil
}
