// Package felicego holds the Go client tests of Felice: franz-go (kgo, kadm)
// and Sarama against a real `felice server` process.
//
// Every test starts its own broker (startBroker) on a free loopback port with
// a data folder under t.TempDir(), waits until it answers an ApiVersions
// request (a bounded poll, no fixed sleep), and stops it by PID when the test
// ends: SIGTERM, then SIGKILL if it has not exited within stopTimeout.
//
// The binary is $FELICE_BIN, or the repository's target/release/felice found
// relative to this file.
//
// FELICE_GO_EXTERNAL=HOST:PORT runs the same tests against a broker that is
// already running (e.g. the reference Kafka from scripts/kafka-ref start) to
// check that the assertions are Kafka's behaviour; steps that restart the
// broker are then left out.
package felicego

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

// feliceBin is $FELICE_BIN or <repo>/target/release/felice, <repo> being two
// folders above this file (tests/go/broker_test.go).
func feliceBin(tb testing.TB) string {
	if bin := os.Getenv("FELICE_BIN"); bin != "" {
		return bin
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("cannot find the test file's path to locate the broker binary; set FELICE_BIN")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "target", "release", "felice")
}

// freePort asks the kernel for a loopback port that nothing listens on now.
func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Broker is one `felice server` process.
type Broker struct {
	Addr    string
	DataDir string
	LogPath string

	tb        testing.TB
	bin       string
	overrides map[string]string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	logFile   *os.File
	mu        sync.Mutex
	exited    bool
	expected  bool // the test asked it to stop
	external  bool // FELICE_GO_EXTERNAL: not ours to start or stop
}

// startBroker starts a broker for this test and registers its stop with
// t.Cleanup. overrides are extra broker config keys (Kafka's names).
func startBroker(tb testing.TB, overrides ...string) *Broker {
	tb.Helper()
	if ext := os.Getenv("FELICE_GO_EXTERNAL"); ext != "" {
		return &Broker{Addr: ext, tb: tb, external: true}
	}
	dir := tb.TempDir()
	b := &Broker{
		Addr:      fmt.Sprintf("127.0.0.1:%d", freePort(tb)),
		DataDir:   filepath.Join(dir, "data"),
		LogPath:   filepath.Join(dir, "broker.log"),
		tb:        tb,
		bin:       feliceBin(tb),
		overrides: map[string]string{},
	}
	if len(overrides)%2 != 0 {
		tb.Fatalf("startBroker: overrides come in key, value pairs: %q", overrides)
	}
	for i := 0; i < len(overrides); i += 2 {
		b.overrides[overrides[i]] = overrides[i+1]
	}
	if _, err := os.Stat(b.bin); err != nil {
		tb.Fatalf("broker binary %s: %v (build it with cargo build --release, or set FELICE_BIN)", b.bin, err)
	}
	b.start()
	tb.Cleanup(func() {
		b.Stop()
		if tb.Failed() {
			tb.Logf("broker log (%s), last lines:\n%s", b.LogPath, b.LogTail(60))
		}
	})
	return b
}

func (b *Broker) start() {
	b.tb.Helper()
	args := []string{"server",
		"--override", "listeners=PLAINTEXT://" + b.Addr,
		"--override", "log.dirs=" + b.DataDir,
	}
	keys := make([]string, 0, len(b.overrides))
	for k := range b.overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--override", k+"="+b.overrides[k])
	}
	f, err := os.OpenFile(b.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.tb.Fatalf("broker log: %v", err)
	}
	fmt.Fprintf(f, "\n===== %s %s\n", b.bin, strings.Join(args, " "))
	b.logFile = f
	cmd := exec.Command(b.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = filepath.Dir(b.DataDir)
	// Its own process group, so a ^C to `go test` is not also delivered to it
	// before the cleanup stops it; and SIGTERM when the test process dies
	// without running its cleanups (a -timeout panic, a kill), so no broker
	// outlives the run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		b.tb.Fatalf("starting %s: %v", b.bin, err)
	}
	b.cmd = cmd
	b.done = make(chan struct{})
	b.exited, b.expected = false, false
	go func(done chan struct{}) {
		_ = cmd.Wait()
		b.mu.Lock()
		b.exited = true
		b.mu.Unlock()
		close(done)
	}(b.done)
	b.waitReady()
}

// waitReady polls until the broker answers an ApiVersions request with error
// code 0, for at most startTimeout; it fails the test (with the broker log)
// if the process exits or the time runs out.
func (b *Broker) waitReady() {
	b.tb.Helper()
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-b.done:
			b.tb.Fatalf("broker exited during start-up (%v):\n%s", b.cmd.ProcessState, b.LogTail(40))
		default:
		}
		if last = apiVersionsPing(b.Addr, 2*time.Second); last == nil {
			return
		}
		select {
		case <-b.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	b.kill()
	b.tb.Fatalf("broker did not answer on %s within %s (last: %v):\n%s", b.Addr, startTimeout, last, b.LogTail(40))
}

// apiVersionsPing sends one ApiVersions v0 request on a fresh connection and
// checks the response's correlation id and error code.
func apiVersionsPing(addr string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	clientID := "felice-go-ready"
	var req bytes.Buffer
	_ = binary.Write(&req, binary.BigEndian, int16(18)) // ApiVersions
	_ = binary.Write(&req, binary.BigEndian, int16(0))  // v0
	_ = binary.Write(&req, binary.BigEndian, int32(7))  // correlation id
	_ = binary.Write(&req, binary.BigEndian, int16(len(clientID)))
	req.WriteString(clientID)
	frame := binary.BigEndian.AppendUint32(nil, uint32(req.Len()))
	if _, err := conn.Write(append(frame, req.Bytes()...)); err != nil {
		return err
	}
	var size int32
	if err := binary.Read(conn, binary.BigEndian, &size); err != nil {
		return err
	}
	if size < 6 || size > 1<<20 {
		return fmt.Errorf("ApiVersions response size %d", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(conn, body); err != nil {
		return err
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != 7 {
		return fmt.Errorf("ApiVersions correlation id %d, want 7", corr)
	}
	if code := int16(binary.BigEndian.Uint16(body[4:])); code != 0 {
		return fmt.Errorf("ApiVersions error code %d", code)
	}
	return nil
}

// Stop sends SIGTERM and waits up to stopTimeout, then SIGKILL. It reports a
// test error if the broker had died on its own before, or ignored SIGTERM.
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	b.mu.Lock()
	already, expected := b.exited, b.expected
	b.expected = true
	b.mu.Unlock()
	if already {
		if !expected {
			b.tb.Errorf("broker had already exited (%v) before the test stopped it:\n%s", b.cmd.ProcessState, b.LogTail(40))
		}
		b.closeLog()
		return
	}
	started := time.Now()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
		if d := time.Since(started); d > time.Second {
			b.tb.Logf("broker took %s to exit after SIGTERM", d.Round(time.Millisecond))
		}
	case <-time.After(stopTimeout):
		b.tb.Errorf("broker (pid %d) ignored SIGTERM for %s; sending SIGKILL", b.cmd.Process.Pid, stopTimeout)
		b.kill()
	}
	b.closeLog()
}

func (b *Broker) kill() {
	b.mu.Lock()
	b.expected = true
	b.mu.Unlock()
	_ = b.cmd.Process.Kill()
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
	}
}

func (b *Broker) closeLog() {
	if b.logFile != nil {
		_ = b.logFile.Close()
		b.logFile = nil
	}
}

// Restart stops the broker cleanly and starts it again on the same port with
// the same data folder.
func (b *Broker) Restart() {
	b.tb.Helper()
	if b.external {
		b.tb.Logf("external broker %s: restart left out", b.Addr)
		return
	}
	b.Stop()
	b.start()
}

// LogTail is the broker log's last n lines.
func (b *Broker) LogTail(n int) string {
	if b.external {
		return "(external broker)"
	}
	f, err := os.Open(b.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// LogContains reports whether the broker log contains s.
func (b *Broker) LogContains(s string) bool {
	data, err := os.ReadFile(b.LogPath)
	return err == nil && bytes.Contains(data, []byte(s))
}

// waitFor calls cond until it returns nil or timeout passes, then fails the
// test with cond's last error. Polling interval 50 ms: this is a bounded wait
// for a condition, not a fixed sleep.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testCtx is a context bounded by d, cancelled when the test ends.
func testCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

var uniqueN struct {
	sync.Mutex
	n int
}

// unique is a name unique to this test run: kind-<test>-<n>-<run token>.
func unique(tb testing.TB, kind string) string {
	uniqueN.Lock()
	uniqueN.n++
	n := uniqueN.n
	uniqueN.Unlock()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(tb.Name())
	if len(name) > 60 {
		name = name[:60]
	}
	return kind + "-" + strings.ToLower(name) + "-" + strconv.Itoa(n) + "-" + runToken
}

// runToken keeps names apart between runs against one external broker.
var runToken = strconv.FormatInt(time.Now().UnixNano()%1_000_000_007, 36)

// TestBrokerHelper checks the harness itself: the broker answers, a restart
// keeps the address, and Stop ends the process by SIGTERM (no SIGKILL).
func TestBrokerHelper(t *testing.T) {
	b := startBroker(t)
	if b.external {
		t.Skip("external broker")
	}
	if err := apiVersionsPing(b.Addr, 2*time.Second); err != nil {
		t.Fatalf("ping: %v", err)
	}
	pid := b.cmd.Process.Pid
	b.Restart()
	if b.cmd.Process.Pid == pid {
		t.Fatalf("restart kept pid %d", pid)
	}
	if err := apiVersionsPing(b.Addr, 2*time.Second); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	b.Stop()
	if code := b.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("broker exit code after SIGTERM = %d, want 0", code)
	}
	if err := apiVersionsPing(b.Addr, time.Second); err == nil {
		t.Errorf("broker still answers on %s after Stop", b.Addr)
	}
}
