// Package relay wires the relay daemon together: it opens the durable
// queue, starts the SMTP intake listeners, the delivery engine and the
// admin API from a validated configuration, and shuts them down in order
// when asked.
package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/intake"
	"github.com/relaysec/relay/relay/metrics"
	"github.com/relaysec/relay/relay/tlsstats"
	"github.com/relaysec/relay/secpolicy"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// Options are settings of the daemon that do not come from relay.toml.
type Options struct {
	Version string
	Logger  *slog.Logger
	// ShutdownTimeout bounds how long transactions in progress may take to
	// finish after the daemon is told to stop; zero means 60s.
	ShutdownTimeout time.Duration
	// Ready, if set, is called once every listener accepts connections.
	Ready func()
	// MXPort is the port of MX hosts; zero means 25. Tests change it.
	MXPort int
	// RootCAs verifies Web PKI certificates (MTA-STS policy hosts and MX
	// hosts, tls-verify routes); nil means the system pool, which honours
	// SSL_CERT_FILE. Tests set a test CA.
	RootCAs *x509.CertPool
	// HTTPSDial, when set, opens the connections to MTA-STS policy hosts;
	// tests point mta-sts.<domain> at loopback with it.
	HTTPSDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ConfigPath is the file cfg was loaded from, read again on SIGHUP and
	// `relayctl reload`. Empty (the embedded default) means there is no
	// file to read again: SIGHUP then only re-reads certificate files.
	ConfigPath string
	// LogLevel, if set, is the level of Logger's handler, which a reload
	// sets from [log] level; nil means a level change needs a restart.
	LogLevel *slog.LevelVar
	// SkipDNSSECCheck skips the start-up check of the resolver's DNSSEC
	// validation (as [dns] check_dnssec = false does).
	SkipDNSSECCheck bool
	// DNSSECCheck replaces that check; nil means
	// secpolicy.Resolver.CheckValidation. Tests set it.
	DNSSECCheck func(ctx context.Context) secpolicy.ValidationCheck
}

// QueueDir returns where the daemon keeps its queue inside data_dir.
func QueueDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "queue") }

// Run starts the daemon described by cfg and blocks until ctx is cancelled
// (SIGTERM) or a listener fails. On the way out it stops accepting mail,
// lets SMTP transactions in progress finish, and closes the queue cleanly.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 60 * time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data_dir: %w", err)
	}
	intakeTLS, intakeCert, err := loadIntakeTLS(cfg)
	if err != nil {
		return err
	}
	users, err := loadUsers(cfg)
	if err != nil {
		return err
	}

	q, err := queue.Open(QueueDir(cfg), queue.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("open queue: %w", err)
	}
	defer func() {
		if err := q.Close(); err != nil {
			log.Error("close queue", "err", err)
		}
	}()
	mx := metrics.New(metrics.Options{Version: opts.Version, QueueStats: q.Stats, Logger: log.With("component", "metrics")})

	// Bind everything before serving anything, so a port conflict is
	// reported before the relay accepts a single message.
	adminLn, err := admin.Listen(cfg.AdminSocketPath())
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	type boundListener struct {
		srv *intake.Server
		ln  net.Listener
	}
	var smtpLns []boundListener
	metricsLn, err := listenMetrics(cfg)
	if err != nil {
		adminLn.Close()
		return err
	}
	closeAll := func() {
		adminLn.Close()
		if metricsLn != nil {
			metricsLn.Close()
		}
		for _, b := range smtpLns {
			b.ln.Close()
		}
	}
	for i, l := range cfg.Listeners {
		iopts := intakeOptions(cfg, l, intakeTLS, users, log)
		iopts.Metrics = mx.Intake()
		srv, err := intake.New(q, iopts)
		if err != nil {
			closeAll()
			return fmt.Errorf("listener[%d]: %w", i, err)
		}
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			closeAll()
			return fmt.Errorf("listener[%d]: %w", i, err)
		}
		smtpLns = append(smtpLns, boundListener{srv, ln})
	}

	resolverAddr, err := cfg.DNSResolverAddr()
	if err != nil {
		closeAll()
		return fmt.Errorf("dns.resolver: %w", err)
	}
	resolver := secpolicy.NewResolver(secpolicy.ResolverConfig{
		Addr: resolverAddr, TrustAD: cfg.DNS.TrustAD, Timeout: cfg.DNS.Timeout.Duration,
		Logger: log.With("component", "dns"), Observe: mx.ObserveDNS,
	})
	waitDNSSECCheck := startDNSSECCheck(cfg, resolver, resolverAddr, opts, log.With("component", "dns"))
	if cfg.Delivery.Hold {
		log.Warn("delivery.hold is set: accepted mail is queued on hold and sent only after `relayctl queue release ID`")
	}
	if !cfg.Delivery.DANE {
		log.Warn("DANE is turned off ([delivery] dane = false): TLSA records are ignored and hosts that publish them get opportunistic TLS only")
	}
	var sts *mtasts.Manager
	if cfg.Delivery.MTASTS {
		var closeSTS func()
		if sts, closeSTS, err = openMTASTS(cfg, resolver, opts, mx.MTASTS(), log.With("component", "mta-sts")); err != nil {
			closeAll()
			return err
		}
		defer closeSTS()
	} else {
		log.Warn("MTA-STS is turned off ([delivery] mta_sts = false): domains' MTA-STS policies are ignored")
	}
	stats, err := tlsstats.Open(filepath.Join(cfg.DataDir, "tls-stats.db"))
	if err != nil {
		closeAll()
		return err
	}
	defer stats.Close()
	dopts := deliveryOptions(cfg, q, resolver, sts, opts, log)
	dopts.TLSStats = stats
	dopts.Metrics = mx.Delivery()
	engine := deliver.New(dopts)
	// Inbound HTTPS (MTA-STS policies, TLS-RPT reports), bound before
	// anything is served.
	var inboundSrv *inbound.Server
	var inboundLn net.Listener
	var reports *tlsrpt.Store
	var served *servedSet
	var mailbox *reportMailbox
	if cfg.Inbound != nil {
		if reports, err = tlsrpt.OpenStore(filepath.Join(cfg.DataDir, "reports.db")); err != nil {
			closeAll()
			return fmt.Errorf("TLS report store: %w", err)
		}
		defer reports.Close()
		served = newServedSet(servedDomains(cfg))
		handler := tlsrpt.Handler(reports, tlsrpt.HandlerOptions{
			MaxBody: int64(cfg.Inbound.TLSRPT.MaxBody),
			Served:  served.contains,
			Logger:  log.With("component", "tlsrpt"),
			Observe: mx.ObserveTLSReport,
		})
		if inboundSrv, inboundLn, err = startInbound(cfg, log.With("component", "inbound"), handler, mx.ObservePolicyRequest); err != nil {
			closeAll()
			return fmt.Errorf("inbound: %w", err)
		}
		// The TLS report mailbox (rua=mailto:) stores into the same store.
		if cfg.Inbound.ReportSMTP != nil {
			if mailbox, err = startReportMailbox(cfg, reports, served.contains, intakeTLS, resolver, log.With("component", "reportmail")); err != nil {
				inboundLn.Close()
				closeAll()
				return fmt.Errorf("inbound.report_smtp: %w", err)
			}
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deliverCtx, stopDelivery := context.WithCancel(context.Background())
	defer stopDelivery()
	var wg sync.WaitGroup
	errc := make(chan error, len(smtpLns)+2)
	deliveryDone := make(chan struct{})
	go func() {
		defer close(deliveryDone)
		engine.Run(deliverCtx)
	}()
	wg.Go(func() {
		stats.Run(deliverCtx, time.Minute, func(err error) { log.Error("TLS statistics", "err", err) })
	})
	if sts != nil {
		// STS11: policies in use are refreshed before they expire.
		wg.Go(func() { sts.RefreshLoop(deliverCtx, mtasts.DefaultRefreshInterval) })
	}

	notify := systemdNotifier(log)
	reload := &reloader{
		path: opts.ConfigPath, log: log.With("component", "reload"), level: opts.LogLevel, metrics: mx,
		intakeCert: intakeCert, engine: engine, inbound: inboundSrv, served: served, notify: notify,
		running: cfg,
	}
	for _, b := range smtpLns {
		reload.intakes = append(reload.intakes, b.srv)
	}
	adminSrv := &http.Server{
		Handler: admin.Handler(q, log.With("component", "admin"), admin.Options{Version: opts.Version, Policy: engine, MTASTS: sts, Reports: reports, TLSStats: stats,
			ReportServed: servedFunc(served), Reload: reload.Reload, Bounce: engine.Bounce}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	wg.Go(func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin API: %w", err)
		}
	})
	for _, b := range smtpLns {
		wg.Go(func() {
			if err := b.srv.Serve(b.ln); err != nil {
				errc <- fmt.Errorf("SMTP listener %s: %w", b.ln.Addr(), err)
			}
		})
		log.Info("SMTP intake listening", "address", b.ln.Addr().String())
	}
	if inboundSrv != nil {
		wg.Go(func() {
			if err := inboundSrv.Serve(inboundLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- inboundError(inboundLn, err)
			}
		})
	}
	if mailbox != nil {
		mx.RegisterReportMail(func() metrics.ReportMailCounts {
			st := mailbox.srv.Stats()
			return metrics.ReportMailCounts{Messages: st.Messages, Stored: st.Stored, Duplicates: st.Duplicates, Invalid: st.Invalid}
		})
		wg.Go(func() { mailbox.serve(errc) })
	}
	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = metricsServer(mx, cfg.Metrics.Pprof)
		wg.Go(func() { serveMetrics(metricsSrv, metricsLn, errc) })
		log.Info("Prometheus metrics listening", "address", metricsLn.Addr().String(), "path", "/metrics")
	}
	// SIGHUP reloads the configuration file (certificates, users, routes,
	// MTA-STS policies served, log level).
	defer reload.watchSIGHUP()()
	log.Info("relay started", "version", opts.Version, "hostname", cfg.Hostname,
		"data_dir", cfg.DataDir, "admin_socket", cfg.AdminSocketPath())
	waitDNSSECCheck(dnssecCheckWait)
	logNextSteps(log, cfg, opts)
	notify(fmt.Sprintf("READY=1\nSTATUS=Accepting mail on %s\nMAINPID=%d", smtpLns[0].ln.Addr(), os.Getpid()))
	if opts.Ready != nil {
		opts.Ready()
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new connections; waiting for transactions in progress")
	case runErr = <-errc:
		log.Error("shutting down after error", "err", runErr)
	}

	notify("STOPPING=1\nSTATUS=Shutting down: waiting for transactions in progress")
	sctx, scancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer scancel()
	var swg sync.WaitGroup
	for _, b := range smtpLns {
		swg.Go(func() {
			if err := b.srv.Shutdown(sctx); err != nil {
				log.Warn("SMTP sessions cut off at shutdown", "address", b.ln.Addr().String(), "err", err)
			}
		})
	}
	if inboundSrv != nil {
		swg.Go(func() {
			if err := inboundSrv.Shutdown(sctx); err != nil {
				log.Warn("inbound HTTPS requests cut off at shutdown", "err", err)
			}
		})
	}
	if mailbox != nil {
		swg.Go(func() { mailbox.shutdown(sctx) })
	}
	swg.Wait()
	// Deliveries in progress are cut short; their recipients stay due and
	// are delivered after the restart.
	stopDelivery()
	<-deliveryDone
	if err := adminSrv.Shutdown(sctx); err != nil {
		adminSrv.Close()
	}
	if metricsSrv != nil {
		if err := metricsSrv.Shutdown(sctx); err != nil {
			metricsSrv.Close()
		}
	}
	wg.Wait()
	os.Remove(cfg.AdminSocketPath())
	log.Info("relay stopped")
	return runErr
}

// openMTASTS opens the MTA-STS policy cache (data_dir/mta-sts.db, which
// survives restarts: checklist STS07) and its manager.
func openMTASTS(cfg *config.Config, resolver *secpolicy.Resolver, opts Options, observer mtasts.Observer, log *slog.Logger) (*mtasts.Manager, func(), error) {
	cache, err := mtasts.OpenCache(filepath.Join(cfg.DataDir, "mta-sts.db"))
	if err != nil {
		return nil, nil, fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	dial := opts.HTTPSDial
	if dial == nil {
		dial = dialThrough(resolver)
	}
	fetcher := mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: opts.RootCAs, DialContext: dial,
		UserAgent: "relay/" + opts.Version})
	m, err := mtasts.NewManager(mtasts.ManagerOptions{Resolver: resolver, Fetcher: fetcher, Cache: cache, Logger: log, Observer: observer})
	if err != nil {
		cache.Close()
		return nil, nil, fmt.Errorf("MTA-STS: %w", err)
	}
	return m, func() { cache.Close() }, nil
}

// dialThrough dials "host:port" with host resolved by the relay's own
// resolver, so that policy hosts are found through the same DNS as
// everything else the relay looks up.
func dialThrough(resolver *secpolicy.Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ha, err := resolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(ha.Addrs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		var d net.Dialer
		var lastErr error
		for _, ip := range ha.Addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
		return nil, lastErr
	}
}

func deliveryOptions(cfg *config.Config, q *queue.Queue, resolver *secpolicy.Resolver, sts *mtasts.Manager, opts Options, log *slog.Logger) deliver.Options {
	routes := deliveryRoutes(cfg)
	d := cfg.Delivery
	return deliver.Options{
		Hostname:           cfg.Hostname,
		Queue:              q,
		Resolver:           resolver,
		Policy:             secpolicy.NewPolicy(secpolicy.PolicyConfig{Resolver: resolver, DANE: d.DANE, RootCAs: opts.RootCAs}),
		MTASTS:             sts,
		Routes:             routes,
		HoldDSNs:           d.Hold,
		Workers:            d.Workers,
		PerHostConnections: d.PerHostConnections,
		FirstRetry:         d.FirstRetry.Duration,
		MaxRetryInterval:   d.MaxRetryInterval.Duration,
		QueueLifetime:      d.QueueLifetime.Duration,
		DelayWarning:       d.DelayWarning.Duration,
		ConnectTimeout:     d.ConnectTimeout.Duration,
		Port:               opts.MXPort,
		Logger:             log.With("component", "deliver"),
	}
}

func intakeOptions(cfg *config.Config, l config.Listener, tlsConf *tls.Config, users *intake.Users, log *slog.Logger) intake.Options {
	var tc *tls.Config
	if l.TLS != intake.TLSNone {
		tc = tlsConf
	}
	return intake.Options{
		Hostname:            cfg.Hostname,
		Address:             l.Address,
		TLS:                 l.TLS,
		Auth:                l.Auth,
		TrustedNetworks:     l.TrustedNetworks,
		TLSConfig:           tc,
		Users:               users,
		MaxMessageBytes:     int64(cfg.Limits.MaxMessageSize),
		MaxRecipients:       cfg.Limits.MaxRecipients,
		MaxLineLength:       cfg.Limits.MaxLineLength,
		MaxConnections:      cfg.Limits.MaxConnections,
		MaxConnectionsPerIP: cfg.Limits.MaxConnectionsPerIP,
		CommandTimeout:      cfg.Limits.CommandTimeout.Duration,
		DataTimeout:         cfg.Limits.DataTimeout.Duration,
		Hold:                cfg.Delivery.Hold,
		Logger:              log.With("component", "intake"),
	}
}

// loadIntakeTLS loads [tls] cert_file/key_file when some listener needs
// them. The certificate is re-read on each handshake when its files change,
// so a renewed certificate is used without a restart, and a reload may
// replace it through the returned holder (nil when no listener uses TLS).
func loadIntakeTLS(cfg *config.Config) (*tls.Config, *certHolder, error) {
	need := false
	for _, l := range cfg.Listeners {
		need = need || l.TLS != intake.TLSNone
	}
	if !need {
		return nil, nil, nil
	}
	c, err := loadCertFile(cfg)
	if err != nil {
		return nil, nil, err
	}
	h := &certHolder{}
	h.set(c)
	return &tls.Config{GetCertificate: h.get, MinVersion: tls.VersionTLS12}, h, nil
}

// certFile is a certificate loaded from PEM files, reloaded when their
// modification time changes.
type certFile struct {
	cert, key string

	mu      sync.Mutex
	loaded  *tls.Certificate
	modTime time.Time
}

func (c *certFile) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := os.Stat(c.cert)
	if err != nil {
		if c.loaded != nil {
			return c.loaded, nil
		}
		return nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	if c.loaded != nil && st.ModTime().Equal(c.modTime) {
		return c.loaded, nil
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		if c.loaded != nil {
			return c.loaded, nil // keep serving the old one while files are half-written
		}
		return nil, fmt.Errorf("tls.cert_file %s / tls.key_file %s: %w", c.cert, c.key, err)
	}
	c.loaded, c.modTime = &pair, st.ModTime()
	return c.loaded, nil
}

func loadUsers(cfg *config.Config) (*intake.Users, error) {
	hashes := make(map[string]string, len(cfg.Users))
	for _, u := range cfg.Users {
		hashes[u.Name] = u.PasswordHash
	}
	users, err := intake.NewUsers(hashes)
	if err != nil {
		return nil, fmt.Errorf("[[user]]: %w", err)
	}
	return users, nil
}
