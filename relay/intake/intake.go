// Package intake is the relay's SMTP submission side: the go-smtp backend
// that accepts mail from the mail servers the relay serves (trusted
// networks or authenticated users), enforces limits, and hands each
// message to the durable queue before answering 250. A plaintext session's
// message is read past go-smtp's byte-at-a-time decoder when that is
// provably safe (fastdata.go).
package intake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/relaysec/relay/internal/smtpconn"

	"github.com/relaysec/relay/queue"
)

// TLS modes of a listener.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
)

// AUTH modes of a listener.
const (
	AuthNone     = "none"
	AuthOptional = "optional"
	AuthRequired = "required"
)

// Options describe one SMTP listener.
type Options struct {
	Hostname string // greeting, Received header
	Address  string // listen address, for logs
	TLS      string // TLSNone, TLSStartTLS or TLSImplicit
	Auth     string // AuthNone, AuthOptional or AuthRequired
	// TrustedNetworks may relay without authenticating.
	TrustedNetworks []netip.Prefix
	// TLSConfig holds the certificate; required unless TLS is TLSNone.
	// To change the certificate while the server runs, give a config whose
	// GetCertificate returns the current one.
	TLSConfig *tls.Config
	// Users are the AUTH accounts; SetUsers replaces them.
	Users *Users

	MaxMessageBytes     int64
	MaxRecipients       int
	MaxLineLength       int
	MaxConnections      int
	MaxConnectionsPerIP int
	CommandTimeout      time.Duration
	DataTimeout         time.Duration
	// slowData makes go-smtp decode every message (see dataConn); for
	// tests that compare both ways.
	slowData bool
	// AuthFailureDelay slows down password guessing; zero means 1s.
	AuthFailureDelay time.Duration
	// Hold queues every accepted message on hold; SetHold changes it.
	Hold bool
	// Metrics, if set, is told about sessions, refusals and queued
	// messages; nil means none.
	Metrics Metrics

	Logger *slog.Logger
}

// Metrics receives the events of an intake server. Its methods are called
// from concurrent sessions and must be cheap.
type Metrics interface {
	// Session is called for each accepted connection that gets a session.
	Session()
	// Rejected is called when a connection, a command or a message is
	// refused, with one of the Reject* reasons.
	Rejected(reason string)
	// Queued is called for each message stored in the queue and
	// acknowledged, with its number of recipients and its size in bytes.
	Queued(recipients int, size int64)
}

// Reasons given to Metrics.Rejected.
const (
	RejectConnectionLimit = "connection_limit" // over max_connections or max_connections_per_ip
	RejectRelayDenied     = "relay_denied"     // RCPT from a client that may not relay
	RejectAuthRequired    = "auth_required"    // MAIL before AUTH on an auth = "required" listener
	RejectAuthFailed      = "auth_failed"      // wrong user name or password
	RejectBadAddress      = "bad_address"      // a sender or recipient address that is not user@domain
	RejectBadParameter    = "bad_parameter"    // ENVID/ORCPT too long, REQUIRETLS without TLS
	RejectMessage         = "message_refused"  // the message was refused in DATA (too big, bad data)
	RejectLineTooLong     = "line_too_long"    // a message line over max_line_length
	RejectTimeout         = "timeout"          // the client stalled in DATA
	RejectStoreFailed     = "store_failed"     // the queue could not store the message (451)
)

// noMetrics is the Metrics of a server without Options.Metrics.
type noMetrics struct{}

func (noMetrics) Session()          {}
func (noMetrics) Rejected(string)   {}
func (noMetrics) Queued(int, int64) {}

// Server is one SMTP intake listener.
type Server struct {
	opts    Options
	q       *queue.Queue
	log     *slog.Logger
	smtp    *smtp.Server
	conns   *smtpconn.Tracker
	metrics Metrics
	users   atomic.Pointer[Users] // nil: nobody can log in
	hold    atomic.Bool
	// dataBufs are the read buffers of the fast DATA path (see dataConn).
	dataBufs *sync.Pool

	// listeners closes Serve's listener at Shutdown, even when Shutdown
	// comes first.
	listeners smtpconn.ListenerGuard
}

// New returns an intake server that stores accepted mail in q.
func New(q *queue.Queue, opts Options) (*Server, error) {
	if opts.TLS != TLSNone && opts.TLSConfig == nil {
		return nil, fmt.Errorf("listener %s: tls = %q needs a certificate", opts.Address, opts.TLS)
	}
	// RFC 4954 §4 / checklist SUB02: passwords only over TLS.
	if opts.Auth != AuthNone && opts.TLS == TLSNone {
		return nil, fmt.Errorf("listener %s: auth = %q needs TLS", opts.Address, opts.Auth)
	}
	if opts.AuthFailureDelay == 0 {
		opts.AuthFailureDelay = time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = noMetrics{}
	}
	s := &Server{
		opts:     opts,
		q:        q,
		log:      log.With("listener", opts.Address),
		conns:    smtpconn.NewTracker(opts.MaxConnections, opts.MaxConnectionsPerIP),
		metrics:  opts.Metrics,
		dataBufs: newDataBufs(),
	}
	s.users.Store(opts.Users)
	s.hold.Store(opts.Hold)
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	srv.ReadTimeout = opts.CommandTimeout
	srv.WriteTimeout = opts.CommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableREQUIRETLS = true // advertised by go-smtp over TLS only (RFC 8689 §4.1)
	srv.EnableDSN = true
	srv.ErrorLog = smtpconn.ErrorLog{Log: s.log}
	if opts.TLS == TLSStartTLS {
		srv.TLSConfig = opts.TLSConfig
	}
	s.smtp = srv
	return s, nil
}

// SetUsers replaces the AUTH accounts; sessions that authenticate from
// then on are checked against u. Sessions already authenticated stay so.
func (s *Server) SetUsers(u *Users) { s.users.Store(u) }

// SetHold changes whether recipients accepted from then on are queued on
// hold (see Options.Hold).
func (s *Server) SetHold(hold bool) { s.hold.Store(hold) }

// Serve accepts connections on ln until Shutdown. For an implicit-TLS
// listener, ln is wrapped in TLS here.
func (s *Server) Serve(ln net.Listener) error {
	ln, ok := s.listeners.Open(ln)
	if !ok {
		return nil
	}
	ln = s.conns.Wrap(ln, smtpconn.ListenerOptions{Hostname: s.opts.Hostname, Greet: s.opts.TLS != TLSImplicit, Log: s.log,
		OnRefuse: func() { s.metrics.Rejected(RejectConnectionLimit) }})
	if s.opts.TLS == TLSImplicit {
		// The server's TLSConfig stays set so that go-smtp reports TLS
		// state; STARTTLS is not offered on an already encrypted session.
		s.smtp.TLSConfig = s.opts.TLSConfig
		ln = tls.NewListener(ln, s.opts.TLSConfig)
	} else {
		ln = dataListener{Listener: ln, bufs: s.dataBufs}
	}
	err := s.smtp.Serve(ln)
	if errors.Is(err, smtp.ErrServerClosed) || s.listeners.Closed() {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, closes idle sessions with a 421
// reply, and waits until ctx ends for transactions in progress to finish
// (a message in DATA is stored and acknowledged); then it closes what
// remains.
func (s *Server) Shutdown(ctx context.Context) error {
	s.listeners.Close() // go-smtp closes it too, if Serve got that far
	s.conns.Drain()
	err := s.smtp.Shutdown(ctx)
	if err != nil {
		s.smtp.Close()
	}
	return err
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	remote := c.Conn().RemoteAddr()
	ip := smtpconn.AddrIP(remote)
	sess := &session{
		srv:     s,
		conn:    c,
		tracked: s.conns.Lookup(remote),
		ip:      ip,
		trusted: s.trusted(ip),
		log:     s.log.With("client", remote.String()),
	}
	s.metrics.Session()
	return sess, nil
}

func (s *Server) trusted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.opts.TrustedNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Replies used by sessions.
var (
	errRelayDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Relaying denied: this relay only accepts mail from its configured networks or authenticated users"}
	errAuthFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required"}
	errStartTLSFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Must issue a STARTTLS command first, then authenticate"}
	errBadRcpt = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message: "Recipient address must be user@domain"}
	errBadSender = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7},
		Message: "Sender address must be user@domain or <>"}
	errLineTooLong = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message has a line longer than this relay accepts"}
	errStoreFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Could not store the message, try again later"}
	// RFC 3463 §3.4 (X.3.1 "mail system full") with RFC 5321's 452
	// "insufficient system storage".
	errStoreFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage, try again later"}
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Timeout while receiving the message"}
	errRequireTLSNeedsTLS = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 10},
		Message: "REQUIRETLS needs an encrypted session"}
)

// session is one SMTP session. go-smtp calls its methods from one
// goroutine.
type session struct {
	srv     *Server
	conn    *smtp.Conn
	tracked *smtpconn.Conn // nil only in tests that bypass the listener
	ip      netip.Addr
	trusted bool
	user    string // authenticated user name
	log     *slog.Logger

	from   *string
	mail   smtp.MailOptions
	rcpts  []queue.Recipient
	denied bool // a RCPT was refused for relaying; logged once
}

func (s *session) tls() (tls.ConnectionState, bool) { return s.conn.TLSConnectionState() }

// mayRelay reports whether this client may hand over mail: from a
// trusted network, or authenticated (checklist SUB01).
func (s *session) mayRelay() bool {
	if s.srv.opts.Auth == AuthRequired {
		return s.user != ""
	}
	return s.trusted || s.user != ""
}

// denial is the reply for a client that may not relay.
func (s *session) denial() error {
	if s.srv.opts.Auth == AuthNone {
		return errRelayDenied
	}
	if _, ok := s.tls(); !ok {
		return errStartTLSFirst
	}
	return errAuthFirst
}

// AuthMechanisms implements smtp.AuthSession. go-smtp offers them only on
// TLS sessions (checklist SUB02).
func (s *session) AuthMechanisms() []string {
	if s.srv.opts.Auth == AuthNone {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.opts.Auth == AuthNone {
		return nil, smtp.ErrAuthUnsupported
	}
	if _, ok := s.tls(); !ok {
		return nil, &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for authentication"}
	}
	check := func(identity, username, password string) error {
		if identity != "" && identity != username {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authorization identity must match the user name"}
		}
		if !s.srv.users.Load().Check(username, password) {
			s.log.Warn("authentication failed", "user", username, "mechanism", mech)
			s.srv.metrics.Rejected(RejectAuthFailed)
			time.Sleep(s.srv.opts.AuthFailureDelay)
			return smtp.ErrAuthFailed
		}
		s.user = username
		s.log = s.log.With("user", username)
		s.log.Info("authenticated", "mechanism", mech)
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.opts.Auth == AuthRequired && s.user == "" {
		s.srv.metrics.Rejected(RejectAuthRequired)
		return s.denial()
	}
	if from != "" && !validAddress(from) {
		s.srv.metrics.Rejected(RejectBadAddress)
		return errBadSender
	}
	// RFC 3461 §4.4: ENVID is at most 100 characters.
	if len(opts.EnvelopeID) > 100 {
		s.srv.metrics.Rejected(RejectBadParameter)
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "ENVID longer than 100 characters"}
	}
	if opts.RequireTLS {
		if _, ok := s.tls(); !ok {
			s.srv.metrics.Rejected(RejectBadParameter)
			return errRequireTLSNeedsTLS
		}
	}
	s.from = &from
	s.mail = *opts
	s.rcpts = nil
	s.tracked.SetBusy(true)
	return nil
}

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.mayRelay() {
		if !s.denied {
			s.denied = true
			s.log.Warn("relaying denied", "rcpt", to, "trusted", s.trusted)
		}
		s.srv.metrics.Rejected(RejectRelayDenied)
		return s.denial()
	}
	if !validAddress(to) {
		s.srv.metrics.Rejected(RejectBadAddress)
		return errBadRcpt
	}
	// RFC 3461 §4.2: ORCPT is at most 500 characters.
	if len(opts.OriginalRecipient) > 500 {
		s.srv.metrics.Rejected(RejectBadParameter)
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "ORCPT longer than 500 characters"}
	}
	r := queue.Recipient{Addr: to}
	if s.srv.hold.Load() {
		r.State = queue.StateHeld
	}
	for _, n := range opts.Notify {
		r.Notify = append(r.Notify, string(n))
	}
	if opts.OriginalRecipient != "" {
		r.ORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// validAddress accepts local@domain with a plausible domain or address
// literal; the delivery side needs a domain to route by. RFC 5321
// §4.5.3.1.3 limits a path to 256 octets, brackets included.
func validAddress(a string) bool {
	if len(a) > 254 {
		return false
	}
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return false
	}
	d := a[i+1:]
	if strings.HasPrefix(d, "[") {
		return strings.HasSuffix(d, "]")
	}
	return !strings.ContainsAny(d, " \t<>()[]\\,;:\"") && !strings.Contains(d, "..") && !strings.HasPrefix(d, ".")
}

// Data implements smtp.Session: the body is spooled with one Received
// header prepended, fsynced with its queue record, and only then
// acknowledged (checklist SUB05, SMTP03).
func (s *session) Data(r io.Reader) error {
	fast := s.fastData() // first: it counts every Data call
	if s.from == nil || len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	w, err := s.srv.q.Create()
	if err != nil {
		s.log.Error("create spool file", "err", err)
		s.srv.metrics.Rejected(RejectStoreFailed)
		return storeError(err)
	}
	defer w.Abort()
	log := s.log.With("queue_id", w.ID())

	if _, err := io.WriteString(w, s.receivedHeader(w.ID())); err != nil {
		log.Error("write spool file", "err", err)
		s.srv.metrics.Rejected(RejectStoreFailed)
		return storeError(err)
	}
	if err := s.readBody(w, r, fast); err != nil {
		var smtpErr *smtp.SMTPError
		switch {
		case errors.As(err, &smtpErr):
			log.Warn("message refused", "reason", smtpErr.Message)
			s.srv.metrics.Rejected(RejectMessage)
			return smtpErr
		case errors.Is(err, smtp.ErrTooLongLine):
			log.Warn("message refused: line too long")
			s.srv.metrics.Rejected(RejectLineTooLong)
			return errLineTooLong
		case smtpconn.IsTimeout(err):
			log.Warn("timeout in DATA")
			s.srv.metrics.Rejected(RejectTimeout)
			return errDataTimeout
		case errors.Is(err, errSpoolWrite):
			log.Error("spool write failed", "err", err)
			s.srv.metrics.Rejected(RejectStoreFailed)
			return storeError(err)
		}
		log.Warn("DATA aborted", "err", err)
		return err
	}

	m := &queue.Message{
		From:       *s.from,
		Body:       string(s.mail.Body),
		SMTPUTF8:   s.mail.UTF8,
		RequireTLS: s.mail.RequireTLS,
		DSNRet:     string(s.mail.Return),
		DSNEnvID:   s.mail.EnvelopeID,
		ClientAddr: s.conn.Conn().RemoteAddr().String(),
		ClientHelo: s.conn.Hostname(),
		AuthUser:   s.user,
		Recipients: s.rcpts,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Commit(ctx, m); err != nil {
		log.Error("commit message", "err", err)
		s.srv.metrics.Rejected(RejectStoreFailed)
		return storeError(err)
	}
	log.Info("queued", "from", m.From, "rcpts", len(m.Recipients), "size", m.Size)
	s.srv.metrics.Queued(len(m.Recipients), m.Size)
	s.reset()
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + m.ID}
}

var errSpoolWrite = errors.New("spool write")

// fastData returns the session's connection if Data may read the message
// from it directly (see dataConn), nil if go-smtp's reader must.
func (s *session) fastData() *dataConn {
	dc, ok := s.conn.Conn().(*dataConn)
	if !ok || !dc.startData() || s.srv.opts.slowData {
		return nil
	}
	return dc
}

// readBody copies the message into w: through the fast path while it
// can, then through go-smtp's reader r.
func (s *session) readBody(w io.Writer, r io.Reader, dc *dataConn) error {
	if dc != nil {
		lim := dataLimits{MaxBytes: s.srv.opts.MaxMessageBytes, MaxLine: s.srv.opts.MaxLineLength, Timeout: s.srv.opts.DataTimeout}
		n, done, err := dc.readData(w, lim)
		if err != nil || done {
			return err
		}
		if lim.MaxBytes > 0 {
			r = &remainingLimit{R: r, N: lim.MaxBytes - n}
		}
	}
	src := &smtpconn.IdleTimeoutReader{R: r, Conn: s.conn.Conn(), Timeout: s.srv.opts.DataTimeout}
	_, err := copyBody(w, src)
	return err
}

// storeError is the reply for a queue that could not store a message:
// 452 4.3.1 when the disk is full (ENOSPC, EDQUOT), 451 4.3.0 otherwise.
func storeError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return errStoreFull
	}
	return errStoreFailed
}

// copyBody copies the message into the spool, telling reader errors
// (client side) from writer errors (our disk).
func copyBody(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32*1024)
	var n int64
	for {
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, fmt.Errorf("%w: %w", errSpoolWrite, werr)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// receivedHeader builds the trace header (RFC 5321 §4.4) with the
// protocol keyword of RFC 3848 and RFC 6531.
func (s *session) receivedHeader(id string) string {
	proto := "SMTP"
	if s.conn.Hostname() != "" { // go-smtp does not tell HELO from EHLO; both are ESMTP-capable here
		proto = "ESMTP"
	}
	if s.mail.UTF8 {
		proto = "UTF8SMTP"
	}
	state, isTLS := s.tls()
	if isTLS {
		proto += "S"
	}
	if s.user != "" {
		proto += "A"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n", sanitize(s.conn.Hostname()), addrLiteral(s.ip))
	if isTLS {
		fmt.Fprintf(&b, "\t(using %s with cipher %s)\r\n", tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite))
	}
	fmt.Fprintf(&b, "\tby %s with %s id %s", s.srv.opts.Hostname, proto, id)
	if len(s.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(s.rcpts[0].Addr))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

func addrLiteral(ip netip.Addr) string {
	if !ip.IsValid() {
		return "[unknown]"
	}
	if ip.Is6() {
		return "[IPv6:" + ip.String() + "]"
	}
	return "[" + ip.String() + "]"
}

// sanitize keeps client-supplied text from breaking the header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' {
			return -1
		}
		return r
	}, s)
}

func (s *session) reset() {
	s.tracked.SetBusy(false)
	s.from = nil
	s.mail = smtp.MailOptions{}
	s.rcpts = nil
}

// Reset implements smtp.Session.
func (s *session) Reset() { s.reset() }

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }
