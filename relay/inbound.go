package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/inbound/reportmail"
	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/secpolicy"
)

// ACMEDir returns where the daemon keeps ACME account keys and certificates
// inside data_dir.
func ACMEDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "acme") }

// inboundOptions maps [inbound] to the options of the inbound HTTPS server.
// reports serves the TLS-RPT path; nil answers 404 there. A reload uses
// its Policies and Certs.
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
// observePolicy, if set, counts the requests for MTA-STS policies.
func startInbound(cfg *config.Config, log *slog.Logger, reports http.Handler, observePolicy func(status int)) (*inbound.Server, net.Listener, error) {
	opts := inboundOptions(cfg, log, reports)
	opts.ObservePolicyRequest = observePolicy
	srv, err := inbound.New(opts)
	if err != nil {
		return nil, nil, err
	}
	ln, err := srv.Listen()
	if err != nil {
		return nil, nil, err
	}
	return srv, ln, nil
}

// inboundError wraps a failure of the inbound server for Run's log.
func inboundError(ln net.Listener, err error) error {
	return fmt.Errorf("inbound HTTPS %s: %w", ln.Addr(), err)
}

// reportMailbox is the TLS report mailbox of [inbound.report_smtp], bound
// and ready to serve.
type reportMailbox struct {
	srv *reportmail.Server
	ln  net.Listener
	log *slog.Logger
}

// startReportMailbox makes the report mailbox of [inbound.report_smtp] and
// binds its address: reports mailed to its addresses go to store, as those
// POSTed over HTTPS do (checklist RPT08). It offers STARTTLS with the [tls]
// certificate when one is configured (intakeTLS, when the intake loaded
// it, follows reloads), looks DKIM keys up with the relay's resolver, and
// has the intake's timeouts and connection limits. cfg.Inbound.ReportSMTP
// must not be nil.
func startReportMailbox(cfg *config.Config, store *tlsrpt.Store, served func(string) bool, intakeTLS *tls.Config,
	resolver *secpolicy.Resolver, log *slog.Logger) (*reportMailbox, error) {
	rs := cfg.Inbound.ReportSMTP
	tc := intakeTLS
	if tc == nil && cfg.TLS.CertFile != "" {
		c, err := loadCertFile(cfg)
		if err != nil {
			return nil, err
		}
		tc = &tls.Config{GetCertificate: c.get, MinVersion: tls.VersionTLS12}
	}
	maxBody := int64(cfg.Inbound.TLSRPT.MaxBody)
	srv, err := reportmail.New(reportmail.Options{
		Hostname:  cfg.Hostname,
		Address:   rs.Address,
		Addresses: rs.Addresses,
		TLSConfig: tc,
		Store:     store,
		Served:    served,
		LookupTXT: resolver.LookupTXT, // DKIM keys; a failure is a DKIM temperror
		Limits:    reportmail.Limits{MaxPartBytes: maxBody},
		// A report of max_body in base64, with headers and a text part.
		MaxMessageBytes:     min(2*maxBody, int64(cfg.Limits.MaxMessageSize)),
		MaxConnections:      cfg.Limits.MaxConnections,
		MaxConnectionsPerIP: cfg.Limits.MaxConnectionsPerIP,
		CommandTimeout:      cfg.Limits.CommandTimeout.Duration,
		DataTimeout:         cfg.Limits.DataTimeout.Duration,
		Logger:              log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", rs.Address)
	if err != nil {
		return nil, err
	}
	if tc == nil {
		log.Warn("report mailbox without STARTTLS: set [tls] cert_file and key_file so that reports travel encrypted")
	}
	return &reportMailbox{srv: srv, ln: ln, log: log}, nil
}

// serve serves the mailbox until shutdown; a failure goes to errc if
// nobody reported one before.
func (m *reportMailbox) serve(errc chan<- error) {
	m.log.Info("TLS report mailbox listening", "address", m.ln.Addr().String())
	if err := m.srv.Serve(m.ln); err != nil {
		select {
		case errc <- err:
		default:
		}
	}
}

// shutdown stops the mailbox, letting messages in DATA finish until ctx
// ends, and logs what it received.
func (m *reportMailbox) shutdown(ctx context.Context) {
	if err := m.srv.Shutdown(ctx); err != nil {
		m.log.Warn("report mailbox sessions cut off at shutdown", "err", err)
	}
	st := m.srv.Stats()
	m.log.Info("report mailbox stopped", "messages", st.Messages, "stored", st.Stored, "duplicates", st.Duplicates,
		"without_report", st.Invalid, "refused_recipients", st.RefusedRecipients)
}
