package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/relay/config"
)

// ACMEDir returns where the daemon keeps ACME account keys and certificates
// inside data_dir.
func ACMEDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "acme") }

// inboundOptions maps [inbound] to the options of the inbound HTTPS server.
// reports serves the TLS-RPT path; nil answers 404 there.
func inboundOptions(cfg *config.Config, log *slog.Logger, reports http.Handler) inbound.Options {
	in := cfg.Inbound
	opts := inbound.Options{
		Address:       in.Address,
		ReportPath:    in.TLSRPT.Path,
		ReportHandler: reports,
		Logger:        log,
	}
	if in.CertFile != "" {
		opts.Certs = append(opts.Certs, inbound.CertPair{CertFile: in.CertFile, KeyFile: in.KeyFile})
	}
	for _, c := range in.Certs {
		opts.Certs = append(opts.Certs, inbound.CertPair{CertFile: c.CertFile, KeyFile: c.KeyFile})
	}
	if in.ACME {
		// Certificates are requested for the policy hosts only: inbound
		// adds them (and ReportHosts) to the allowed names itself.
		opts.ACME = &inbound.ACMEOptions{
			Directory: in.ACMEDirectory,
			Email:     in.ACMEEmail,
			CacheDir:  ACMEDir(cfg),
		}
	}
	for _, p := range in.MTASTS {
		opts.Policies = append(opts.Policies, inbound.PolicyConfig{
			Domain: p.Domain, Mode: p.Mode, MaxAge: p.MaxAge, MX: p.MX,
		})
	}
	return opts
}

// servedDomains reports whether a TLS report's policy domain is one this
// relay fronts (an [[inbound.mta_sts]] domain); others are stored and
// flagged foreign (checklist RPT06).
func servedDomains(cfg *config.Config) func(string) bool {
	served := map[string]bool{}
	for _, p := range cfg.Inbound.MTASTS {
		served[strings.ToLower(strings.TrimSuffix(p.Domain, "."))] = true
	}
	return func(d string) bool { return served[d] }
}

// startInbound makes the inbound HTTPS server of [inbound] and binds its
// address; the caller serves it with Serve(ln). cfg.Inbound must not be nil.
func startInbound(cfg *config.Config, log *slog.Logger, reports http.Handler) (*inbound.Server, net.Listener, error) {
	srv, err := inbound.New(inboundOptions(cfg, log, reports))
	if err != nil {
		return nil, nil, err
	}
	ln, err := srv.Listen()
	if err != nil {
		return nil, nil, err
	}
	return srv, ln, nil
}

// reloadOnSIGHUP reloads the inbound certificate files whenever the process
// receives SIGHUP, until ctx ends or the returned stop function is called.
func reloadOnSIGHUP(ctx context.Context, srv *inbound.Server, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := srv.ReloadCertificates(); err != nil {
					log.Error("SIGHUP: certificates not reloaded; the previous ones stay in use", "err", err)
				} else {
					log.Info("SIGHUP: inbound certificates reloaded")
				}
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

// inboundError wraps a failure of the inbound server for Run's log.
func inboundError(ln net.Listener, err error) error {
	return fmt.Errorf("inbound HTTPS %s: %w", ln.Addr(), err)
}
