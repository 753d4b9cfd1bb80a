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
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/intake"
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
	intakeTLS, err := loadIntakeTLS(cfg)
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
	closeAll := func() {
		adminLn.Close()
		for _, b := range smtpLns {
			b.ln.Close()
		}
	}
	for i, l := range cfg.Listeners {
		srv, err := intake.New(q, intakeOptions(cfg, l, intakeTLS, users, log))
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
		Logger: log.With("component", "dns"),
	})
	if cfg.Delivery.Hold {
		log.Warn("delivery.hold is set: accepted mail is queued on hold and sent only after `relayctl queue release ID`")
	}
	if !cfg.Delivery.DANE {
		log.Warn("DANE is turned off ([delivery] dane = false): TLSA records are ignored and hosts that publish them get opportunistic TLS only")
	}
	var sts *mtasts.Manager
	if cfg.Delivery.MTASTS {
		var closeSTS func()
		if sts, closeSTS, err = openMTASTS(cfg, resolver, opts, log.With("component", "mta-sts")); err != nil {
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
	engine := deliver.New(dopts)
	// Inbound HTTPS (MTA-STS policies, TLS-RPT reports), bound before
	// anything is served.
	var inboundSrv *inbound.Server
	var inboundLn net.Listener
	var reports *tlsrpt.Store
	if cfg.Inbound != nil {
		if reports, err = tlsrpt.OpenStore(filepath.Join(cfg.DataDir, "reports.db")); err != nil {
			closeAll()
			return fmt.Errorf("TLS report store: %w", err)
		}
		defer reports.Close()
		handler := tlsrpt.Handler(reports, tlsrpt.HandlerOptions{
			MaxBody: int64(cfg.Inbound.TLSRPT.MaxBody),
			Served:  servedDomains(cfg),
			Logger:  log.With("component", "tlsrpt"),
		})
		if inboundSrv, inboundLn, err = startInbound(cfg, log.With("component", "inbound"), handler); err != nil {
			closeAll()
			return fmt.Errorf("inbound: %w", err)
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

	adminSrv := &http.Server{
		Handler:           admin.Handler(q, log.With("component", "admin"), admin.Options{Version: opts.Version, Policy: engine, MTASTS: sts, Reports: reports, TLSStats: stats}),
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
		defer reloadOnSIGHUP(ctx, inboundSrv, log.With("component", "inbound"))()
	} else {
		// Nothing reloads on SIGHUP yet; it must not stop the daemon.
		signal.Ignore(syscall.SIGHUP)
	}
	log.Info("relay started", "version", opts.Version, "hostname", cfg.Hostname,
		"data_dir", cfg.DataDir, "admin_socket", cfg.AdminSocketPath())
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
	swg.Wait()
	// Deliveries in progress are cut short; their recipients stay due and
	// are delivered after the restart.
	stopDelivery()
	<-deliveryDone
	if err := adminSrv.Shutdown(sctx); err != nil {
		adminSrv.Close()
	}
	wg.Wait()
	os.Remove(cfg.AdminSocketPath())
	log.Info("relay stopped")
	return runErr
}

// openMTASTS opens the MTA-STS policy cache (data_dir/mta-sts.db, which
// survives restarts: checklist STS07) and its manager.
func openMTASTS(cfg *config.Config, resolver *secpolicy.Resolver, opts Options, log *slog.Logger) (*mtasts.Manager, func(), error) {
	cache, err := mtasts.OpenCache(filepath.Join(cfg.DataDir, "mta-sts.db"))
	if err != nil {
		return nil, nil, fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	fetcher := mtasts.NewFetcher(mtasts.FetcherOptions{RootCAs: opts.RootCAs, DialContext: opts.HTTPSDial,
		UserAgent: "relay/" + opts.Version})
	m, err := mtasts.NewManager(mtasts.ManagerOptions{Resolver: resolver, Fetcher: fetcher, Cache: cache, Logger: log})
	if err != nil {
		cache.Close()
		return nil, nil, fmt.Errorf("MTA-STS: %w", err)
	}
	return m, func() { cache.Close() }, nil
}

func deliveryOptions(cfg *config.Config, q *queue.Queue, resolver *secpolicy.Resolver, sts *mtasts.Manager, opts Options, log *slog.Logger) deliver.Options {
	routes := make([]deliver.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = deliver.Route{Domain: r.Domain, NextHop: r.NextHop, Security: r.Security}
	}
	d := cfg.Delivery
	return deliver.Options{
		Hostname:           cfg.Hostname,
		Queue:              q,
		Resolver:           resolver,
		Policy:             secpolicy.NewPolicy(secpolicy.PolicyConfig{Resolver: resolver, DANE: d.DANE, RootCAs: opts.RootCAs}),
		MTASTS:             sts,
		Routes:             routes,
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
// so a renewed certificate is used without a restart.
func loadIntakeTLS(cfg *config.Config) (*tls.Config, error) {
	need := false
	for _, l := range cfg.Listeners {
		need = need || l.TLS != intake.TLSNone
	}
	if !need {
		return nil, nil
	}
	c := &certFile{cert: cfg.TLS.CertFile, key: cfg.TLS.KeyFile}
	if _, err := c.get(nil); err != nil {
		return nil, err
	}
	return &tls.Config{GetCertificate: c.get, MinVersion: tls.VersionTLS12}, nil
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
