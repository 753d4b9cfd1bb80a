package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/metrics"
	"github.com/relaysec/relay/secpolicy"
)

// notifySystemd sends state to the service manager on the socket named by
// $NOTIFY_SOCKET, as sd_notify(3) does ("READY=1", "STATUS=...",
// "STOPPING=1"); without the variable (not started by systemd with
// Type=notify) it does nothing. A name starting with '@' is an abstract
// socket, which the net package handles.
func notifySystemd(state string) error {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return nil
	}
	if socket[0] != '/' && socket[0] != '@' {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q is not a unix socket path", socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// systemdNotifier returns a function that sends states to systemd and logs
// a failure once at warn level, then at debug level. It is safe for
// concurrent use.
func systemdNotifier(log *slog.Logger) func(state string) {
	var warned atomic.Bool
	return func(state string) {
		if err := notifySystemd(state); err != nil {
			level := slog.LevelDebug
			if warned.CompareAndSwap(false, true) {
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "could not notify systemd", "err", err)
		}
	}
}

// Limits of the start-up DNSSEC self-check.
const (
	// dnssecCheckTimeout bounds the whole check; it runs in the
	// background, so this only bounds when its result is logged.
	dnssecCheckTimeout = 5 * time.Second
	// dnssecCheckWait is how long start-up waits for the result, so that
	// it is logged before "ready" when the resolver answers at once; a
	// slow resolver does not delay start-up longer.
	dnssecCheckWait = 2 * time.Second
)

// startDNSSECCheck checks in the background whether the resolver validates
// DNSSEC (secpolicy.Resolver.CheckValidation, or opts.DNSSECCheck) and logs
// what it found. The returned function waits until the result is logged,
// at most d. With [dns] check_dnssec = false or opts.SkipDNSSECCheck, it
// does nothing.
func startDNSSECCheck(cfg *config.Config, resolver *secpolicy.Resolver, addr string, opts Options, log *slog.Logger) (wait func(d time.Duration)) {
	if opts.SkipDNSSECCheck || !cfg.DNS.CheckDNSSEC {
		log.Info("DNSSEC self-check of the resolver skipped", "resolver", addr)
		return func(time.Duration) {}
	}
	check := opts.DNSSECCheck
	if check == nil {
		check = resolver.CheckValidation
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), dnssecCheckTimeout)
		defer cancel()
		logDNSSECCheck(log, check(ctx), addr, resolver.TrustsAD(), cfg.Delivery.DANE)
	}()
	return func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
	}
}

// logDNSSECCheck says what the self-check found and what it means for
// DANE.
func logDNSSECCheck(log *slog.Logger, c secpolicy.ValidationCheck, addr string, trusted, dane bool) {
	attrs := []any{"resolver", addr, "probes", c.Detail}
	if !dane {
		attrs = append(attrs, "dane", "turned off in the configuration")
	}
	const fix = "run a validating resolver (unbound, knot-resolver) on this host and set [dns] resolver = \"127.0.0.1:53\""
	switch c.Result {
	case secpolicy.ValidationOK:
		if trusted {
			log.Info(fmt.Sprintf("DNSSEC self-check: resolver %s validates DNSSEC", addr), attrs...)
			return
		}
		log.Warn(fmt.Sprintf("DNSSEC self-check: resolver %s validates DNSSEC, but its AD bit is not trusted: DANE is effectively off", addr),
			append(attrs, "fix", "the resolver is not on a loopback address: set [dns] trust_ad = true if the network path to it is protected, or "+fix)...)
	case secpolicy.ValidationOff:
		log.Warn(fmt.Sprintf("DNSSEC self-check: resolver %s does NOT validate DNSSEC: DANE is effectively off", addr),
			append(attrs, "fix", fix)...)
	case secpolicy.ValidationNoAD:
		log.Warn(fmt.Sprintf("DNSSEC self-check: resolver %s rejects forged answers but does not set the AD bit: DANE is effectively off", addr),
			append(attrs, "fix", fix)...)
	default:
		log.Info(fmt.Sprintf("DNSSEC self-check: could not check whether resolver %s validates DNSSEC", addr),
			append(attrs, "hint", "no conclusive answer for the probe names (no internet access?); DANE applies only if the resolver validates")...)
	}
}

// logNextSteps tells the operator where things are and what to run next,
// after start-up.
func logNextSteps(log *slog.Logger, cfg *config.Config, opts Options) {
	dataDir := cfg.DataDir
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	ctl := "relayctl"
	if p := opts.ConfigPath; p != "" && p != "relay.toml" && p != "/etc/relay/relay.toml" {
		ctl = "relayctl --config " + p
	}
	log.Info("ready: see the queue with `"+ctl+" queue inspect`", "data_dir", dataDir, "admin_socket", cfg.AdminSocketPath())
	if cfg.Delivery.Hold {
		log.Info("accepted mail is held: send it on with `" + ctl + " queue release ID` (IDs from `" + ctl + " queue list`)")
	}
	if opts.ConfigPath == "" {
		log.Info("running on the embedded default configuration: write your own with `relay config default > relay.toml`, edit it, and run `relay serve --config relay.toml`")
	}
}

// listenMetrics binds [metrics] address; nil, nil when it is empty.
func listenMetrics(cfg *config.Config) (net.Listener, error) {
	if cfg.Metrics.Address == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics.address: %w", err)
	}
	return ln, nil
}

// metricsServer returns the HTTP server of /metrics and, with withPprof,
// of Go's profiles under /debug/pprof/.
func metricsServer(m *metrics.Metrics, withPprof bool) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "relay: Prometheus metrics are at /metrics")
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
}

// serveMetrics serves srv on ln and reports a failure on errc.
func serveMetrics(srv *http.Server, ln net.Listener, errc chan<- error) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errc <- fmt.Errorf("metrics listener %s: %w", ln.Addr(), err)
	}
}
