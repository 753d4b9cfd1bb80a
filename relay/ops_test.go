package relay

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/metrics"
	"github.com/relaysec/relay/secpolicy"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testDaemon is a daemon run in-process from a configuration file.
type testDaemon struct {
	cfg   *config.Config
	path  string       // the configuration file
	logs  *syncBuffer  // everything logged, text format
	log   *slog.Logger // the daemon's logger
	admin *admin.Client
	stop  func() error
}

// runDaemon writes text to relay.toml in a temporary directory (the
// placeholder DATA_DIR names a data directory next to it), starts the
// daemon on it with opts and waits until it is ready. Logs go to
// testDaemon.logs at the level of opts.LogLevel (debug when nil). The
// daemon stops at the end of the test.
func runDaemon(t *testing.T, text string, opts Options) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.toml")
	text = strings.ReplaceAll(text, "DATA_DIR", filepath.Join(dir, "data"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	var level slog.Leveler = slog.LevelDebug
	if opts.LogLevel != nil {
		level = opts.LogLevel
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	opts.ConfigPath = path
	if opts.Version == "" {
		opts.Version = "test"
	}
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, opts) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon exited: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("daemon did not become ready\n%s", logs)
	}
	d := &testDaemon{cfg: cfg, path: path, logs: logs, log: opts.Logger, admin: admin.NewClient(cfg.AdminSocketPath())}
	stopped := false
	var stopErr error
	d.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
			d.admin.Close()
		}
		return stopErr
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	})
	return d
}

// rewrite replaces the daemon's configuration file.
func (d *testDaemon) rewrite(t *testing.T, text string) {
	t.Helper()
	text = strings.ReplaceAll(text, "DATA_DIR", d.cfg.DataDir)
	if err := os.WriteFile(d.path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// scrape fetches the metrics page.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	return string(body)
}

// metricSum adds up the samples of a metric in a text exposition: the
// series whose line starts with prefix, which is a metric name or a name
// with the beginning of its labels in sorted order, such as
// `relay_deliveries_total{outcome="delivered",policy="opportunistic"}`.
// found reports whether there was any.
func metricSum(page, prefix string) (sum float64, found bool) {
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if strings.HasPrefix(line, "#") || !ok {
			continue
		}
		if !strings.Contains(prefix, "{") && !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{") {
			continue // another metric whose name starts with prefix
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// TestMetricsEndToEnd submits a message, lets the daemon deliver it over
// STARTTLS and scrapes /metrics: intake, delivery, queue and DNS metrics
// moved.
func TestMetricsEndToEnd(t *testing.T) {
	zone := testnet.NewZone(
		"dest.test. 300 IN MX 10 mx.dest.test.",
		"mx.dest.test. 300 IN A 127.0.0.31",
	)
	dnsSrv := testnet.StartDNS(t, zone)
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx.dest.test")
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.31:0", TLSCert: &cert})
	smtpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = %q
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[metrics]
address = %q
`, dnsSrv.Addr(), smtpAddr, metricsAddr), Options{MXPort: rcv.Port(), SkipDNSSECCheck: true})

	page := scrape(t, metricsAddr)
	if v, ok := metricSum(page, "relay_queue_messages"); !ok || v != 0 {
		t.Errorf("relay_queue_messages before any mail = %v (found %v), want 0", v, ok)
	}
	sendMail(t, smtpAddr, "alice@example.org", "bob@dest.test", "Subject: metrics\r\n\r\nhello\r\n")
	rcv.WaitMessages(t, 1, 15*time.Second)

	delivered := `relay_deliveries_total{outcome="delivered",policy="opportunistic"}`
	waitFor(t, delivered, func() bool {
		v, _ := metricSum(scrape(t, metricsAddr), delivered)
		return v == 1
	})
	page = scrape(t, metricsAddr)
	for _, c := range []struct {
		series string
		want   float64
	}{
		{"relay_intake_messages_total", 1},
		{"relay_intake_sessions_total", 1},
		{"relay_intake_recipients_total", 1},
		{`relay_delivery_attempts_total{policy="opportunistic",result="delivered"}`, 1},
		{`relay_deliveries_total{outcome="deferred"`, 0},
		{`relay_mtasts_fetches_total{outcome="ok"}`, 0},
		{`relay_build_info{goversion=`, 1},
	} {
		if v, ok := metricSum(page, c.series); !ok || v != c.want {
			t.Errorf("%s = %v (found %v), want %v", c.series, v, ok, c.want)
		}
	}
	if v, _ := metricSum(page, "relay_dns_lookups_total"); v <= 0 {
		t.Errorf("relay_dns_lookups_total = %v, want lookups counted", v)
	}
	if v, _ := metricSum(page, `relay_dns_lookups_total{outcome="insecure",type="MX"}`); v < 1 {
		t.Errorf("MX lookups = %v, want at least one insecure", v)
	}
	for _, gauge := range []string{"relay_queue_messages", `relay_queue_recipients{state="delivered"}`, "relay_queue_oldest_message_age_seconds", "go_goroutines"} {
		if _, ok := metricSum(page, gauge); !ok {
			t.Errorf("no %s in the scrape", gauge)
		}
	}
}

// TestSystemdNotify runs the daemon as systemd's Type=notify would: it
// sends READY=1 to $NOTIFY_SOCKET once it accepts mail, and STOPPING=1
// when it stops.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	d := runDaemon(t, fmt.Sprintf(`
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
`, freeAddr(t)), Options{SkipDNSSECCheck: true})
	msg := read()
	if !strings.Contains(msg, "READY=1\n") || !strings.Contains(msg, "STATUS=Accepting mail on") || !strings.Contains(msg, fmt.Sprintf("MAINPID=%d", os.Getpid())) {
		t.Errorf("first notification %q, want READY=1 with STATUS and MAINPID", msg)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if msg := read(); !strings.HasPrefix(msg, "STOPPING=1") {
		t.Errorf("notification at stop %q, want STOPPING=1", msg)
	}
}

// TestNotifySystemdWithoutSocket: outside systemd nothing is sent and
// nothing fails; a bad NOTIFY_SOCKET is an error.
func TestNotifySystemdWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notifySystemd("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := notifySystemd("READY=1"); err == nil {
		t.Error("no error for an unsupported NOTIFY_SOCKET")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if err := notifySystemd("READY=1"); err == nil {
		t.Error("no error for a socket nobody listens on")
	}
}

// TestFirstRunMessages checks what an operator reads at start-up: where
// the relay listens, where data goes, the resolver and whether it is
// trusted, the DNSSEC self-check's verdict, and the next step.
func TestFirstRunMessages(t *testing.T) {
	smtpAddr := freeAddr(t)
	text := fmt.Sprintf(`
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[delivery]
hold = true
`, smtpAddr)
	d := runDaemon(t, text, Options{DNSSECCheck: func(context.Context) secpolicy.ValidationCheck {
		return secpolicy.ValidationCheck{Result: secpolicy.ValidationOff, Detail: ". SOA: 1 record(s), AD not set"}
	}})
	logs := d.logs.String()
	for _, want := range []string{
		"SMTP intake listening",
		"address=" + smtpAddr,
		"data_dir=" + d.cfg.DataDir,
		"DNS resolver configured; its AD bit is trusted (loopback address)",
		"DNSSEC self-check: resolver 127.0.0.1:9 does NOT validate DNSSEC: DANE is effectively off",
		"ready: see the queue with `relayctl --config " + d.path + " queue inspect`",
		"queue release ID",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("start-up log lacks %q", want)
		}
	}
	if i, j := strings.Index(logs, "DNSSEC self-check"), strings.Index(logs, "ready: see the queue"); i < 0 || j < 0 || i > j {
		t.Errorf("the self-check verdict does not come before the next step")
	}
}

// TestDNSSECSelfCheckOffline: the real self-check against a resolver that
// does not answer says it could not check, and start-up goes on at once.
func TestDNSSECSelfCheckOffline(t *testing.T) {
	start := time.Now()
	d := runDaemon(t, fmt.Sprintf(`
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
`, freeAddr(t)), Options{})
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("start-up took %v", took)
	}
	waitFor(t, "the self-check verdict", func() bool {
		return strings.Contains(d.logs.String(), "DNSSEC self-check: could not check whether resolver 127.0.0.1:9 validates DNSSEC")
	})
}

// TestDNSSECSelfCheckVerdicts logs each verdict with the words an
// operator looks for.
func TestDNSSECSelfCheckVerdicts(t *testing.T) {
	tests := []struct {
		v       secpolicy.Validation
		trusted bool
		want    string
		level   string
	}{
		{secpolicy.ValidationOK, true, "resolver 127.0.0.1:53 validates DNSSEC", "INFO"},
		{secpolicy.ValidationOK, false, "validates DNSSEC, but its AD bit is not trusted: DANE is effectively off", "WARN"},
		{secpolicy.ValidationOff, true, "does NOT validate DNSSEC: DANE is effectively off", "WARN"},
		{secpolicy.ValidationNoAD, true, "does not set the AD bit: DANE is effectively off", "WARN"},
		{secpolicy.ValidationUnknown, true, "could not check whether resolver 127.0.0.1:53 validates DNSSEC", "INFO"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		logDNSSECCheck(slog.New(slog.NewTextHandler(&buf, nil)), secpolicy.ValidationCheck{Result: tt.v, Detail: "x"}, "127.0.0.1:53", tt.trusted, true)
		if out := buf.String(); !strings.Contains(out, tt.want) || !strings.Contains(out, "level="+tt.level) {
			t.Errorf("%v (trusted %v): %s", tt.v, tt.trusted, out)
		}
	}
}

// The profiles are served only when [metrics] pprof is on.
func TestMetricsServerPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		srv := metricsServer(metrics.New(metrics.Options{}), enabled)
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
		want := http.StatusNotFound
		if enabled {
			want = http.StatusOK
		}
		if rec.Code != want {
			t.Errorf("pprof=%v: GET /debug/pprof/ = %d, want %d", enabled, rec.Code, want)
		}
	}
}
