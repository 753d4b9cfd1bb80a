package testnet

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SMTPOptions configures an SMTP receiver started by StartSMTP.
type SMTPOptions struct {
	// Addr is the listening address; any 127.0.0.0/8 address works on
	// Linux, for example "127.0.0.2:0". Empty means "127.0.0.1:0".
	Addr string
	// Hostname is the name in the greeting; empty means "mx.test".
	Hostname string
	// TLSCert enables STARTTLS with this certificate (chain). When both
	// TLSCert and TLSConfig are nil, STARTTLS is not advertised.
	TLSCert *tls.Certificate
	// TLSConfig, when not nil, is used for STARTTLS instead of a
	// configuration built from TLSCert (for example to limit TLS versions).
	TLSConfig *tls.Config

	EnableDSN        bool
	EnableREQUIRETLS bool // advertised only after STARTTLS, as RFC 8689 requires
	EnableSMTPUTF8   bool
	// MaxMessageBytes is advertised with SIZE and enforced; 0 means no limit.
	MaxMessageBytes int64

	// MailReply, when not nil, may reject MAIL FROM by returning an error.
	MailReply func(from string, opts smtp.MailOptions) *smtp.SMTPError
	// RcptReply, when not nil, may reject a recipient by returning an error.
	RcptReply func(rcpt string) *smtp.SMTPError
	// DataReply, when not nil, may reject a message after its data were
	// received; a rejected message is not recorded.
	DataReply func(msg Received) *smtp.SMTPError
}

// Received is one message accepted by an SMTP receiver.
type Received struct {
	From       string
	To         []string
	Data       []byte
	Helo       string // the EHLO/HELO name given by the client
	TLS        bool
	TLSVersion uint16
	ServerName string // SNI sent by the client
	// ConnID identifies the TCP connection the message came on (1 for the
	// first connection accepted), to observe connection reuse.
	ConnID   int
	MailOpts smtp.MailOptions
	RcptOpts map[string]smtp.RcptOptions
}

// SMTPReceiver is a go-smtp server that records the messages it accepts.
type SMTPReceiver struct {
	opts SMTPOptions
	ln   net.Listener
	srv  *smtp.Server

	mu      sync.Mutex
	msgs    []Received
	conns   int
	snis    []string
	changed chan struct{} // closed and replaced when msgs grows
	closed  bool
}

// StartSMTP starts an SMTP receiver, stopped by t.Cleanup.
func StartSMTP(t testing.TB, opts SMTPOptions) *SMTPReceiver {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("testnet: SMTP listener on %s: %v", addr, err)
	}
	r := &SMTPReceiver{opts: opts, changed: make(chan struct{})}
	r.ln = &countingListener{Listener: ln, r: r}

	srv := smtp.NewServer(smtp.BackendFunc(r.newSession))
	srv.Domain = opts.Hostname
	if srv.Domain == "" {
		srv.Domain = "mx.test"
	}
	srv.EnableDSN = opts.EnableDSN
	srv.EnableREQUIRETLS = opts.EnableREQUIRETLS
	srv.EnableSMTPUTF8 = opts.EnableSMTPUTF8
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.ErrorLog = &tLogger{t: t, r: r}
	tlsConfig := opts.TLSConfig
	if tlsConfig == nil && opts.TLSCert != nil {
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{*opts.TLSCert}}
	}
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
		next := tlsConfig.GetConfigForClient
		tlsConfig.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			r.mu.Lock()
			r.snis = append(r.snis, hello.ServerName)
			r.mu.Unlock()
			if next != nil {
				return next(hello)
			}
			return nil, nil
		}
		srv.TLSConfig = tlsConfig
	}
	r.srv = srv

	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(r.ln); err != nil && !errors.Is(err, net.ErrClosed) {
			r.logf("testnet: SMTP server: %v", err)
		}
	}()
	t.Cleanup(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		_ = srv.Close()
		<-done
	})
	return r
}

// Addr returns the listening address, "127.0.0.x:port".
func (r *SMTPReceiver) Addr() string { return r.ln.Addr().String() }

// Port returns the listening port.
func (r *SMTPReceiver) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// Messages returns the messages accepted so far, in order.
func (r *SMTPReceiver) Messages() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.msgs...)
}

// Connections returns the number of TCP connections accepted so far.
func (r *SMTPReceiver) Connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

// ServerNames returns the SNI of every TLS ClientHello received, including
// handshakes that failed ("" when the client sent none).
func (r *SMTPReceiver) ServerNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.snis...)
}

// WaitMessages waits until at least n messages were accepted and returns
// them; it fails the test after timeout.
func (r *SMTPReceiver) WaitMessages(t testing.TB, n int, timeout time.Duration) []Received {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		if len(r.msgs) >= n {
			msgs := append([]Received(nil), r.msgs...)
			r.mu.Unlock()
			return msgs
		}
		got, changed := len(r.msgs), r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("testnet: SMTP receiver %s: got %d messages, want %d within %v", r.Addr(), got, n, timeout)
			return nil
		}
	}
}

func (r *SMTPReceiver) record(m Received) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *SMTPReceiver) logf(format string, args ...any) {
	if l, ok := r.srv.ErrorLog.(*tLogger); ok {
		l.Printf(format, args...)
	}
}

func (r *SMTPReceiver) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{r: r, c: c, connID: connID(c.Conn())}, nil
}

// connID finds the connection number below a possible TLS layer.
func connID(c net.Conn) int {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ic, ok := c.(*idConn); ok {
		return ic.id
	}
	return 0
}

type session struct {
	r      *SMTPReceiver
	c      *smtp.Conn
	connID int
	msg    Received
}

func (s *session) Reset() { s.msg = Received{} }

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	var o smtp.MailOptions
	if opts != nil {
		o = *opts
	}
	if f := s.r.opts.MailReply; f != nil {
		if e := f(from, o); e != nil {
			return e
		}
	}
	s.msg = Received{From: from, MailOpts: o, RcptOpts: make(map[string]smtp.RcptOptions)}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if f := s.r.opts.RcptReply; f != nil {
		if e := f(to); e != nil {
			return e
		}
	}
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
		o.Notify = append([]smtp.DSNNotify(nil), opts.Notify...)
	}
	s.msg.To = append(s.msg.To, to)
	s.msg.RcptOpts[to] = o
	return nil
}

func (s *session) Data(rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	m := s.msg
	m.To = append([]string(nil), s.msg.To...)
	m.Data = data
	m.Helo = s.c.Hostname()
	m.ConnID = s.connID
	if st, ok := s.c.TLSConnectionState(); ok {
		m.TLS = true
		m.TLSVersion = st.Version
		m.ServerName = st.ServerName
	}
	if f := s.r.opts.DataReply; f != nil {
		if e := f(m); e != nil {
			return e
		}
	}
	s.r.record(m)
	return nil
}

// countingListener numbers accepted connections.
type countingListener struct {
	net.Listener
	r *SMTPReceiver
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.r.mu.Lock()
	l.r.conns++
	id := l.r.conns
	l.r.mu.Unlock()
	return &idConn{Conn: c, id: id}, nil
}

type idConn struct {
	net.Conn
	id int
}

// tLogger sends go-smtp's error log to t.Logf while the test runs.
type tLogger struct {
	t testing.TB
	r *SMTPReceiver
}

func (l *tLogger) Printf(format string, v ...any) {
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	if !l.r.closed {
		l.t.Logf("smtp %s: %s", l.r.ln.Addr(), fmt.Sprintf(format, v...))
	}
}

func (l *tLogger) Println(v ...any) {
	l.Printf("%s", fmt.Sprintln(v...))
}

// Refuse returns an address on host (an IP of 127.0.0.0/8, "" meaning
// 127.0.0.1; a port, if given, is ignored) where connections are refused:
// it binds a free port and closes the listener again.
func Refuse(t testing.TB, host string) string {
	t.Helper()
	if host == "" {
		host = "127.0.0.1"
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("testnet: Refuse: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatalf("testnet: Refuse: %v", err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
