// Command load measures the latency of `mp-hsm serve` against offered load,
// for docs/BENCHMARKS.md (make bench runs it; see scripts/bench.sh):
//
//	go run ./bench/load -mp-hsm bin/bench/mp-hsm -store bin/bench/store -out bin/bench/load.json
//
// It starts the Maskinporten emulator in this process, trusting the root of
// the SoftHSM2 store that softhsm/cmd/provision made in -store, and the
// daemon as a child process on a loopback TCP port with a client secret.
// After one cold request fills the cache, it offers cached-token requests
// (POST /token, HTTP Basic, keep-alive) in an open loop: at each rate of
// -rates for -duration, a request is due every 1/rate seconds whether or
// not earlier ones have been answered (each in its own goroutine), so a
// server that falls behind is charged for its queue. Latency is counted
// from when the request was sent; how late the generator sent it after it
// was due (its timer's overshoot, or CPU it could not get) is reported
// apart, as lag. At most -max-inflight requests are outstanding; a request
// due beyond that is counted as failed. The ramp stops after the first rate
// whose p99 is over -stop-p99 or whose failures are over 1%.
//
// Everything listens on 127.0.0.1 and the whole run is bounded by the rates
// and durations given (at most about 40 s by default). The result is JSON: one
// point per rate with the achieved rate and the p50, p90 and p99 latencies.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// Result is what the command writes.
type Result struct {
	Target   string        `json:"target"`
	Duration time.Duration `json:"duration_per_rate"`
	Points   []Point       `json:"points"`
	Stopped  string        `json:"stopped,omitempty"` // why the ramp ended early
}

// Point is the outcome of one offered rate.
type Point struct {
	Offered  float64 `json:"offered_rps"`
	Achieved float64 `json:"achieved_rps"` // answered with 200 per second
	Sent     int     `json:"sent"`
	Failed   int     `json:"failed"` // errors, non-200 answers, and requests past -max-inflight
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	// LagP50 and LagP99 are how late the generator sent requests after
	// they were due: its own share of the latencies above.
	LagP50 float64 `json:"lag_p50_ms"`
	LagP99 float64 `json:"lag_p99_ms"`
}

const clientID = "bench-client"

func main() {
	bin := flag.String("mp-hsm", "bin/bench/mp-hsm", "the mp-hsm binary")
	store := flag.String("store", "bin/bench/store", "the SoftHSM2 store softhsm/cmd/provision made")
	out := flag.String("out", "", "write the JSON result here (default stdout)")
	rates := flag.String("rates", "500,1000,2000,4000,8000,12000,16000,24000,32000", "offered rates, requests per second, comma-separated")
	duration := flag.Duration("duration", 3*time.Second, "how long each rate is offered")
	maxInflight := flag.Int("max-inflight", 512, "at most this many requests outstanding")
	stopP99 := flag.Duration("stop-p99", 500*time.Millisecond, "stop the ramp after a rate whose p99 is over this")
	flag.Parse()
	var offered []float64
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			fatalf("-rates: %q is not a positive number", s)
		}
		offered = append(offered, r)
	}
	res, err := run(*bin, *store, offered, *duration, *maxInflight, *stopP99)
	if err != nil {
		fatalf("%v", err)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	b = append(b, '\n')
	if *out == "" {
		os.Stdout.Write(b)
		return
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...)
	os.Exit(1)
}

func run(bin, store string, offered []float64, duration time.Duration, maxInflight int, stopP99 time.Duration) (*Result, error) {
	env, err := readEnv(filepath.Join(store, "client.env"))
	if err != nil {
		return nil, err
	}
	root, err := readCert(env["MP_HSM_ROOT_CA"])
	if err != nil {
		return nil, err
	}
	emu := emulator.NewServer(emulator.Config{
		Roots:   []*x509.Certificate{root},
		Clients: []emulator.Client{{ID: clientID, OrgNumber: env["MP_HSM_ORG_NUMBER"], Scopes: []string{"bench:read"}}},
	})
	defer emu.Close()

	dir, err := os.MkdirTemp("", "mp-hsm-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	secret := randomHex(16)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	d, err := startDaemon(bin, env, dir, "tcp:"+addr, secretFile, emu)
	if err != nil {
		return nil, err
	}
	defer d.stop()

	base := "http://" + addr
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConns: maxInflight, MaxIdleConnsPerHost: maxInflight, IdleConnTimeout: time.Minute},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()
	body := url.Values{"grant_type": {"client_credentials"}, "scope": {"bench:read"}}.Encode()
	do := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/token", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(clientID, secret)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return err
	}
	// The cold request, then a short warm-up of the connections.
	if err := do(context.Background()); err != nil {
		return nil, fmt.Errorf("the first token request: %w\n%s", err, d.log())
	}
	openLoop(do, 200, time.Second, maxInflight)

	res := &Result{
		Target:   "mp-hsm serve, cached token, POST /token over loopback TCP with HTTP Basic and keep-alive",
		Duration: duration,
	}
	for _, rate := range offered {
		p := openLoop(do, rate, duration, maxInflight)
		res.Points = append(res.Points, p)
		fmt.Fprintf(os.Stderr, "load: %6.0f req/s offered: %6.0f answered/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, %d failed (send lag p50 %.2f ms)\n",
			p.Offered, p.Achieved, p.P50, p.P90, p.P99, p.Failed, p.LagP50)
		if p.P99 > float64(stopP99)/float64(time.Millisecond) || float64(p.Failed) > 0.01*float64(p.Sent) {
			res.Stopped = fmt.Sprintf("saturated at %.0f req/s offered (p99 over %s or more than 1%% failed)", rate, stopP99)
			break
		}
	}
	return res, nil
}

// openLoop offers requests at rate for duration, never more than
// maxInflight outstanding, and measures each from when it was sent.
func openLoop(do func(context.Context) error, rate float64, duration time.Duration, maxInflight int) Point {
	n := int(rate * duration.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, n)
	lag := make([]time.Duration, n)
	ok := make([]bool, n)
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	var overflow atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Second)
	defer cancel()
	start := time.Now()
	for i := 0; i < n; {
		now := time.Since(start)
		due := int(now/interval) + 1 // requests due by now
		for ; i < n && i < due; i++ {
			at := start.Add(time.Duration(i) * interval)
			select {
			case sem <- struct{}{}:
			default:
				overflow.Add(1)
				continue
			}
			wg.Add(1)
			go func(i int, at time.Time) {
				defer wg.Done()
				sent := time.Now()
				lag[i] = sent.Sub(at)
				err := do(ctx)
				lat[i], ok[i] = time.Since(sent), err == nil
				<-sem
			}(i, at)
		}
		if i < n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	var good, lags []time.Duration
	for i := range n {
		if ok[i] {
			good = append(good, lat[i])
			lags = append(lags, lag[i])
		}
	}
	slices.Sort(good)
	slices.Sort(lags)
	pct := func(d []time.Duration, q float64) float64 {
		if len(d) == 0 {
			return 0
		}
		return float64(d[min(len(d)-1, int(q*float64(len(d))))]) / float64(time.Millisecond)
	}
	return Point{
		Offered: rate, Achieved: float64(len(good)) / elapsed.Seconds(), Sent: n, Failed: n - len(good),
		P50: pct(good, 0.50), P90: pct(good, 0.90), P99: pct(good, 0.99), Max: pct(good, 1),
		LagP50: pct(lags, 0.50), LagP99: pct(lags, 0.99),
	}
}

// daemonProc is the running `mp-hsm serve`.
type daemonProc struct {
	cmd    *exec.Cmd
	stderr *os.File
}

func startDaemon(bin string, env map[string]string, dir, listen, secretFile string, emu *emulator.Server) (*daemonProc, error) {
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--log-level", "warn", "serve", "--listen", listen, "--client-secret-file", secretFile,
		"--client-id", clientID, "--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL(),
		"--token-label", env["MP_HSM_TOKEN_LABEL"], "--key-id", env["MP_HSM_KEY_ID"])
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir,
		"SOFTHSM2_CONF=" + env["SOFTHSM2_CONF"], "MP_HSM_MODULE=" + env["MP_HSM_MODULE"], "MP_HSM_PIN_FILE=" + env["MP_HSM_PIN_FILE"]}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d := &daemonProc{cmd: cmd, stderr: logf}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	host := strings.TrimPrefix(listen, "tcp:")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("mp-hsm serve exited: %v\n%s", err, d.log())
		default:
		}
		resp, err := http.Get("http://" + host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				go func() { <-exited }()
				return d, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	return nil, fmt.Errorf("mp-hsm serve was not ready within 30s\n%s", d.log())
}

func (d *daemonProc) log() string {
	b, _ := os.ReadFile(d.stderr.Name())
	return string(b)
}

// stop sends SIGTERM and, after 10 seconds, SIGKILL.
func (d *daemonProc) stop() {
	defer d.stderr.Close()
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	for range 100 {
		if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = d.cmd.Process.Kill()
}

// readEnv reads the KEY=value lines of client.env, with the single quotes
// provision writes.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (make the store with: go run ./softhsm/cmd/provision -dir DIR)", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = strings.ReplaceAll(v[1:len(v)-1], `'\''`, `'`)
		}
		env[k] = v
	}
	for _, k := range []string{"SOFTHSM2_CONF", "MP_HSM_MODULE", "MP_HSM_TOKEN_LABEL", "MP_HSM_KEY_ID", "MP_HSM_PIN_FILE", "MP_HSM_ROOT_CA", "MP_HSM_ORG_NUMBER"} {
		if env[k] == "" {
			return nil, fmt.Errorf("%s: no %s", path, k)
		}
	}
	return env, sc.Err()
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New(path + ": no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
