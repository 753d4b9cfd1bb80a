package reportmail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/internal/smtpconn"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

// Defaults of Options.
const (
	// DefaultMaxMessageBytes is the largest report message accepted: a
	// report of tlsrpt.DefaultMaxBody in base64 with room for headers and
	// a text part.
	DefaultMaxMessageBytes = 2 * tlsrpt.DefaultMaxBody
	// DefaultMaxLineLength allows JSON reports sent on one long line in a
	// 7bit or 8bit part.
	DefaultMaxLineLength = 64 << 10
	// DefaultMaxRecipients bounds the RCPT commands of a transaction.
	DefaultMaxRecipients  = 20
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
	// DefaultDKIMTimeout bounds the key lookups of one message.
	DefaultDKIMTimeout = 20 * time.Second
	// DefaultMaxConcurrent is the number of messages decoded, verified
	// and stored at once; more wait their turn.
	DefaultMaxConcurrent = 8
)

// Store keeps the reports; *tlsrpt.Store is one.
type Store interface {
	Add(ctx context.Context, r *tlsrpt.Report, raw []byte, meta tlsrpt.Meta) (id string, duplicate bool, err error)
}

// Options configure a Server.
type Options struct {
	// Hostname is the name in the greeting. Required.
	Hostname string
	// Address is the listening address, for logs.
	Address string
	// Addresses are the report mailboxes (rua=mailto: addresses) accepted
	// as recipients, compared case-insensitively. At least one.
	Addresses []string
	// TLSConfig enables STARTTLS; nil means the server does not offer it.
	TLSConfig *tls.Config
	// Store receives the reports. Required.
	Store Store
	// Served reports whether the relay serves a policy domain; reports
	// for others are stored flagged foreign (tlsrpt.Meta.Served). Nil
	// means all are served.
	Served func(domain string) bool
	// LookupTXT looks DKIM keys up; nil means the system resolver.
	LookupTXT LookupTXTFunc
	// Limits bound the extraction of reports from a message.
	Limits Limits

	// MaxMessageBytes is the largest message accepted (advertised with
	// SIZE; larger ones get 552); zero means DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// MaxLineLength is the longest line accepted; zero means
	// DefaultMaxLineLength.
	MaxLineLength int
	// MaxRecipients bounds RCPT per transaction; zero means
	// DefaultMaxRecipients.
	MaxRecipients int
	// MaxConnections and MaxConnectionsPerIP bound concurrent
	// connections; zero means no limit.
	MaxConnections      int
	MaxConnectionsPerIP int
	// CommandTimeout bounds the wait for a command, DataTimeout the wait
	// for more message data; zero means the defaults.
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	// DKIMTimeout bounds the DKIM key lookups of one message; zero means
	// DefaultDKIMTimeout.
	DKIMTimeout time.Duration
	// MaxConcurrent bounds the messages processed at once (decompression
	// needs memory); zero means DefaultMaxConcurrent.
	MaxConcurrent int

	// Logger receives a line per message and per refused recipient; nil
	// discards.
	Logger *slog.Logger
	// Now returns the current time (for tests); nil means time.Now.
	Now func() time.Time
}

// Stats count what the server did since it started.
type Stats struct {
	// Messages is the messages received (DATA completed within the size
	// limit).
	Messages int64 `json:"messages"`
	// Stored and Duplicates count reports stored, and reports already
	// stored before (by email or HTTPS).
	Stored     int64 `json:"stored"`
	Duplicates int64 `json:"duplicates"`
	// Invalid is the messages accepted without a valid report: answered
	// 250, logged, not stored.
	Invalid int64 `json:"invalid"`
	// InvalidReports counts report parts that failed validation in
	// messages that had another, valid one.
	InvalidReports int64 `json:"invalid_reports"`
	// RefusedRecipients counts RCPT commands for other addresses (550).
	RefusedRecipients int64 `json:"refused_recipients"`
	// StoreErrors counts messages answered 451 because the store failed.
	StoreErrors int64 `json:"store_errors"`
}

// Server is the report mailbox: an SMTP listener that stores the TLS
// reports mailed to its addresses.
type Server struct {
	opts  Options
	log   *slog.Logger
	smtp  *smtp.Server
	conns *smtpconn.Tracker
	// listeners closes Serve's listener at Shutdown, even when Shutdown
	// comes first.
	listeners smtpconn.ListenerGuard
	rcpts     map[string]bool // lower-case report addresses
	sem       chan struct{}   // bounds messages processed at once

	messages, stored, duplicates, invalid, invalidReports, refused, storeErrors atomic.Int64
}

// New returns a report mailbox server; serve it with Serve.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("report mailbox: no report store")
	}
	if opts.Hostname == "" {
		return nil, errors.New("report mailbox: no host name")
	}
	if len(opts.Addresses) == 0 {
		return nil, errors.New("report mailbox: no report addresses")
	}
	rcpts := make(map[string]bool, len(opts.Addresses))
	for _, a := range opts.Addresses {
		addr := normalizeAddr(a)
		if i := strings.LastIndexByte(addr, '@'); i <= 0 || i == len(addr)-1 {
			return nil, fmt.Errorf("report mailbox: %q is not an email address", a)
		}
		rcpts[addr] = true
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = DefaultMaxLineLength
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = DefaultMaxRecipients
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.DataTimeout <= 0 {
		opts.DataTimeout = DefaultDataTimeout
	}
	if opts.DKIMTimeout <= 0 {
		opts.DKIMTimeout = DefaultDKIMTimeout
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:  opts,
		log:   log.With("listener", opts.Address),
		conns: smtpconn.NewTracker(opts.MaxConnections, opts.MaxConnectionsPerIP),
		rcpts: rcpts,
		sem:   make(chan struct{}, opts.MaxConcurrent),
	}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	srv.ReadTimeout = opts.CommandTimeout
	srv.WriteTimeout = opts.CommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.TLSConfig = opts.TLSConfig // STARTTLS offered when set
	srv.ErrorLog = smtpconn.ErrorLog{Log: s.log, Prefix: "reportmail: "}
	s.smtp = srv
	return s, nil
}

// normalizeAddr is the form report addresses are compared in.
func normalizeAddr(a string) string {
	return strings.ToLower(strings.TrimSpace(strings.Trim(strings.TrimSpace(a), "<>")))
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	ln, ok := s.listeners.Open(ln)
	if !ok {
		return nil
	}
	ln = s.conns.Wrap(ln, smtpconn.ListenerOptions{Hostname: s.opts.Hostname, Greet: true, Log: s.log.With("component", "reportmail")})
	err := s.smtp.Serve(ln)
	if err != nil && !errors.Is(err, smtp.ErrServerClosed) && !s.listeners.Closed() {
		return fmt.Errorf("report mailbox %s: %w", s.opts.Address, err)
	}
	return nil
}

// Shutdown stops accepting connections, closes idle sessions with a 421
// reply, and waits until ctx ends for transactions in progress to finish
// (a message in DATA is stored and answered); then it closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	s.listeners.Close()
	s.conns.Drain()
	err := s.smtp.Shutdown(ctx)
	if err != nil {
		s.smtp.Close()
		return fmt.Errorf("report mailbox shutdown: %w", err)
	}
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Messages:          s.messages.Load(),
		Stored:            s.stored.Load(),
		Duplicates:        s.duplicates.Load(),
		Invalid:           s.invalid.Load(),
		InvalidReports:    s.invalidReports.Load(),
		RefusedRecipients: s.refused.Load(),
		StoreErrors:       s.storeErrors.Load(),
	}
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	remote := c.Conn().RemoteAddr()
	return &session{
		srv:     s,
		conn:    c,
		tracked: s.conns.Lookup(remote),
		log:     s.log.With("client", remote.String()),
	}, nil
}

// Replies of sessions.
var (
	errBadSender = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7},
		Message: "Sender address must be user@domain or <>"}
	errStoreFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Could not store the report, try again later"}
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Timeout while receiving the message"}
	errLineTooLong = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message has a line longer than this server accepts"}
)

// errNoMailbox is the reply to a recipient that is not a report address:
// the server is never a relay.
func errNoMailbox(rcpt string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: fmt.Sprintf("<%s>: no such mailbox: this server accepts only TLS reports (RFC 8460) for its report addresses", clean(truncateName(rcpt)))}
}

// session is one SMTP session; go-smtp calls its methods from one
// goroutine.
type session struct {
	srv     *Server
	conn    *smtp.Conn
	tracked *smtpconn.Conn // nil only when the listener is bypassed
	log     *slog.Logger

	from    *string
	rcpts   []string
	refused bool // a recipient was refused in this session; logged once
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if from != "" && (len(from) > 254 || !strings.Contains(from, "@")) {
		return errBadSender
	}
	s.from = &from
	s.rcpts = nil
	s.tracked.SetBusy(true)
	return nil
}

// Rcpt implements smtp.Session: only the report addresses are accepted.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.srv.rcpts[normalizeAddr(to)] {
		s.srv.refused.Add(1)
		if !s.refused {
			s.refused = true
			s.log.Warn("reportmail: recipient refused: not a report address", "rcpt", clean(truncateName(to)))
		}
		return errNoMailbox(to)
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// Data implements smtp.Session: the message is read (go-smtp answers 552
// beyond MaxMessageBytes), its reports are extracted, validated and
// stored, and only then is it answered.
func (s *session) Data(r io.Reader) error {
	if s.from == nil || len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	src := &smtpconn.IdleTimeoutReader{R: r, Conn: s.conn.Conn(), Timeout: s.srv.opts.DataTimeout}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(src); err != nil {
		var smtpErr *smtp.SMTPError
		switch {
		case errors.As(err, &smtpErr):
			s.log.Warn("reportmail: message refused", "reason", smtpErr.Message)
			return smtpErr
		case errors.Is(err, smtp.ErrTooLongLine):
			s.log.Warn("reportmail: message refused: line too long")
			return errLineTooLong
		case smtpconn.IsTimeout(err):
			s.log.Warn("reportmail: timeout in DATA")
			return errDataTimeout
		}
		s.log.Warn("reportmail: DATA aborted", "err", err)
		return err
	}
	s.srv.messages.Add(1)
	reply := s.srv.receive(s.log, *s.from, buf.Bytes())
	s.reset()
	return reply
}

// receive stores the reports of one message and returns the reply.
func (s *Server) receive(log *slog.Logger, from string, msg []byte) error {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	sender := senderOf(from, msg)
	log = log.With("from", sender, "size", len(msg))
	ex, err := Extract(msg, s.opts.Limits)
	if err == nil {
		err = ex.Err()
	}
	if err != nil {
		s.invalid.Add(1)
		log.Warn("reportmail: message without a TLS report accepted and dropped", "err", oneLine(err.Error()))
		return ok("Ok: message accepted, but it holds no TLS report")
	}
	type parsed struct {
		rep   *tlsrpt.Report
		found Found
	}
	var valid []parsed
	var invalid []string
	for _, f := range ex.Reports {
		rep, err := tlsrpt.Parse(f.JSON)
		if err != nil {
			invalid = append(invalid, f.Where+": "+oneLine(err.Error()))
			continue
		}
		valid = append(valid, parsed{rep, f})
	}
	if len(valid) == 0 {
		s.invalid.Add(1)
		log.Warn("reportmail: message without a valid TLS report accepted and dropped", "invalid", invalid)
		return ok("Ok: message accepted, but its TLS report is not valid")
	}
	s.invalidReports.Add(int64(len(invalid)))
	if len(invalid) > 0 || len(ex.Problems) > 0 {
		log.Warn("reportmail: report parts left out", "invalid", invalid, "problems", errStrings(ex.Problems))
	}

	dctx, cancel := context.WithTimeout(context.Background(), s.opts.DKIMTimeout)
	dkimResult := VerifyDKIM(dctx, msg, s.opts.LookupTXT)
	cancel()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stored, dups int
	for _, p := range valid {
		id, dup, err := s.opts.Store.Add(ctx, p.rep, p.found.JSON, tlsrpt.Meta{
			Received: s.opts.Now(),
			Source:   tlsrpt.SourceEmail,
			Sender:   sender,
			DKIM:     dkimResult,
			Served:   s.opts.Served,
		})
		if err != nil {
			// Reports stored before the failure are deduplicated when
			// the sender tries again.
			s.storeErrors.Add(1)
			log.Error("reportmail: storing report failed", "organization", p.rep.OrganizationName, "report_id", p.rep.ReportID, "err", err)
			return errStoreFailed
		}
		if dup {
			dups++
			s.duplicates.Add(1)
		} else {
			stored++
			s.stored.Add(1)
		}
		log.Info("reportmail: report received", "id", id, "duplicate", dup,
			"organization", p.rep.OrganizationName, "report_id", p.rep.ReportID,
			"policy_domains", p.rep.PolicyDomains(), "dkim", dkimResult, "part", p.found.Where)
	}
	switch {
	case dups == 0:
		return ok(fmt.Sprintf("Ok: %d TLS report(s) stored", stored))
	case stored == 0:
		return ok("Ok: TLS report already stored")
	}
	return ok(fmt.Sprintf("Ok: %d TLS report(s) stored, %d already stored", stored, dups))
}

// ok is a 250 reply with a message.
func ok(msg string) error {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: msg}
}

func errStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = oneLine(e.Error())
	}
	return out
}

// senderOf describes who sent a report: the envelope sender ("<>" when
// null) and, when it differs, the From header's address.
func senderOf(envelope string, msg []byte) string {
	env := envelope
	if env == "" {
		env = "<>"
	}
	var from string
	if m, err := mail.ReadMessage(bytes.NewReader(msg)); err == nil {
		if v := m.Header.Get("From"); v != "" {
			if a, err := mail.ParseAddress(v); err == nil {
				from = a.Address
			} else {
				from = strings.TrimSpace(v)
			}
		}
	}
	s := env
	if from != "" && !strings.EqualFold(from, envelope) {
		s += " (From: " + from + ")"
	}
	return clean(truncateSender(s))
}

// truncateSender bounds a sender to what the report store accepts.
func truncateSender(s string) string {
	const max = 512
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

func (s *session) reset() {
	s.tracked.SetBusy(false)
	s.from = nil
	s.rcpts = nil
}

// Reset implements smtp.Session.
func (s *session) Reset() { s.reset() }

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }
