package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/pkcs11"

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
// then it is used and left running), and re-initialises the soft token
// through PKCS#11 (C_InitToken, C_InitPIN, C_SetPIN) with ockLabel and
// fresh PINs, which deletes every object on it. A soft token that was
// initialised with another label is someone's: Start refuses to wipe it.
//
// Starting pkcsslotd needs root. A user that is not root can use a
// pkcsslotd that root started (systemctl start pkcsslotd) when the user is
// in group pkcs11, which owns /var/lib/opencryptoki, /run/lock/opencryptoki
// and pkcsslotd's socket and shared memory.
//
// dir receives pkcsslotd's output (pkcsslotd.log).
func StartOpenCryptoki(dir string) (*Running, error) {
	r := &Running{
		Name:   "opencryptoki",
		Module: OpenCryptokiModule(),
		Label:  ockLabel,
		PIN:    ockPIN,
		SOPIN:  ockSOPIN,
		Notes: []string{
			"One soft token per machine: opencryptoki's paths are compiled in (/etc/opencryptoki, " +
				"/var/lib/opencryptoki/swtok, /var/run/pkcsslotd.socket), so tests serialise on a lock file.",
			"pkcsslotd must run (started by root; systemctl start pkcsslotd); a user who is not root " +
				"must be in group pkcs11.",
			"PINs are 4 to 8 bytes.",
		},
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
	path := ockLockFile
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		path = filepath.Join(os.TempDir(), filepath.Base(path))
	}
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
			f.Close()
			return nil, fmt.Errorf("opencryptoki: locking %s (another process uses the soft token): %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
			r.Notes = append(r.Notes, fmt.Sprintf("(this run used a pkcsslotd it did not start, pid %d)", pid))
			return nil
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
// zombies).
func ockDaemons() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && ockAlive(pid) {
			pids = append(pids, pid)
		}
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

// ockVersion returns the Debian packages' versions.
func ockVersion() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Package} ${Version}\n",
		"opencryptoki", "libopencryptoki0").Output()
	if err != nil {
		return "", fmt.Errorf("opencryptoki: dpkg-query: %w", err)
	}
	return strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ", "), nil
}

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
		return "", fmt.Errorf("opencryptoki: C_Initialize (is pkcsslotd running, and are you in group pkcs11?): %w", err)
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
		filepath.Join(ockStore, "MK_USER"), ockShm) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("opencryptoki: re-initialising the soft token: %w", err)
		}
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
