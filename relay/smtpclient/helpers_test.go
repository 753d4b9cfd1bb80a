package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const localName = "relay.example.com"

// testCert returns a self-signed certificate for mx.test and 127.0.0.1,
// and a pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mx.test"},
		DNSNames:              []string{"mx.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// syncBuf is a goroutine-safe buffer for go-smtp's Debug traffic log.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sessionRec is one go-smtp session: created at EHLO/HELO, and again at
// the EHLO after STARTTLS.
type sessionRec struct {
	helo   string
	remote string
	tls    bool
}

// message is one message accepted by the go-smtp backend.
type message struct {
	remote   string
	from     string
	mailOpts smtp.MailOptions
	rcpts    []string
	rcptOpts []smtp.RcptOptions
	data     []byte
}

// backend is a go-smtp backend that records sessions and messages.
type backend struct {
	mailReply func(from string) error
	rcptReply func(to string) error
	dataReply func(data []byte) error

	mu       sync.Mutex
	sessions []sessionRec
	msgs     []message
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	remote := c.Conn().RemoteAddr().String()
	b.mu.Lock()
	b.sessions = append(b.sessions, sessionRec{helo: c.Hostname(), remote: remote, tls: isTLS})
	b.mu.Unlock()
	return &session{be: b, remote: remote}, nil
}

func (b *backend) snapshot() ([]sessionRec, []message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sessionRec(nil), b.sessions...), append([]message(nil), b.msgs...)
}

type session struct {
	be     *backend
	remote string
	cur    message
}

func (s *session) Reset()        { s.cur = message{} }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if f := s.be.mailReply; f != nil {
		if err := f(from); err != nil {
			return err
		}
	}
	s.cur = message{remote: s.remote, from: from}
	if opts != nil {
		s.cur.mailOpts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if f := s.be.rcptReply; f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	s.cur.rcptOpts = append(s.cur.rcptOpts, o)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if f := s.be.dataReply; f != nil {
		if err := f(data); err != nil {
			return err
		}
	}
	m := s.cur
	m.data = data
	s.be.mu.Lock()
	s.be.msgs = append(s.be.msgs, m)
	s.be.mu.Unlock()
	return nil
}

// goServer is a running go-smtp server.
type goServer struct {
	addr string
	be   *backend
	log  *syncBuf // all traffic, decrypted
}

// startGoSMTP starts a go-smtp server on 127.0.0.1; configure may adjust
// the server and the backend before it starts.
func startGoSMTP(t *testing.T, configure func(*smtp.Server, *backend)) *goServer {
	t.Helper()
	be := &backend{}
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	buf := &syncBuf{}
	s.Debug = buf
	if configure != nil {
		configure(s, be)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return &goServer{addr: ln.Addr().String(), be: be, log: buf}
}

// withTLS enables STARTTLS on a go-smtp server.
func withTLS(cert tls.Certificate) func(*smtp.Server, *backend) {
	return func(s *smtp.Server, _ *backend) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
}

// dial connects to addr and starts a client with t's timeouts.
func dial(t *testing.T, addr string, to Timeouts) *Client {
	t.Helper()
	c, err := dialErr(t, addr, to)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(t *testing.T, addr string, to Timeouts) (*Client, error) {
	t.Helper()
	conn, err := netDial(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return New(ctx, conn, localName, to)
}

// netDial connects to a test server.
func netDial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}

// fakeServer is a raw SMTP peer driven by a script, for behaviour go-smtp
// cannot show or produce. It records every line the client sends.
type fakeServer struct {
	t    *testing.T
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cmds []string
	conn []net.Conn
}

// fakeConn is one accepted connection of a fakeServer.
type fakeConn struct {
	f  *fakeServer
	c  net.Conn
	br *bufio.Reader
}

// startFake runs handle for every connection accepted on 127.0.0.1.
func startFake(t *testing.T, handle func(fc *fakeConn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conn = append(f.conn, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				handle(&fakeConn{f: f, c: c, br: bufio.NewReader(c)})
			}()
		}
	}()
	t.Cleanup(f.stop)
	return f
}

// stop closes the listener and all connections and waits for handlers.
func (f *fakeServer) stop() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conn {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

// commands returns the lines received so far.
func (f *fakeServer) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// send writes the reply lines, each followed by CRLF, in one write.
func (fc *fakeConn) send(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	fc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fc.c.Write([]byte(b.String()))
}

// read reads and records one line, without CRLF.
func (fc *fakeConn) read(timeout time.Duration) (string, error) {
	fc.c.SetReadDeadline(time.Now().Add(timeout))
	l, err := fc.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	l = strings.TrimRight(l, "\r\n")
	fc.f.mu.Lock()
	fc.f.cmds = append(fc.f.cmds, l)
	fc.f.mu.Unlock()
	return l, nil
}

// script is a simple SMTP dialogue for a fakeServer: greeting, EHLO reply
// with ext, 250 to everything else, 354 to DATA. override may handle a
// command itself and report true.
func script(ext []string, override func(fc *fakeConn, cmd string) bool) func(fc *fakeConn) {
	return scriptGreeting([]string{"220 fake.test ESMTP"}, ext, override)
}

// scriptGreeting is script with the given greeting lines.
func scriptGreeting(greeting, ext []string, override func(fc *fakeConn, cmd string) bool) func(fc *fakeConn) {
	return func(fc *fakeConn) {
		fc.send(greeting...)
		for {
			cmd, err := fc.read(10 * time.Second)
			if err != nil {
				return
			}
			if override != nil && override(fc, cmd) {
				continue
			}
			verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
			switch {
			case verb == "EHLO":
				lines := []string{"250-fake.test"}
				for _, e := range ext {
					lines = append(lines, "250-"+e)
				}
				lines[len(lines)-1] = "250 " + lines[len(lines)-1][4:]
				fc.send(lines...)
			case verb == "DATA":
				fc.send("354 go ahead")
				if !fc.readData() {
					return
				}
				fc.send("250 2.0.0 queued")
			case verb == "QUIT":
				fc.send("221 2.0.0 bye")
				return
			default:
				fc.send("250 2.0.0 ok")
			}
		}
	}
}

// readData reads message lines up to the "." line; false on EOF or error.
func (fc *fakeConn) readData() bool {
	for {
		fc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := fc.br.ReadString('\n')
		if err != nil {
			return false
		}
		if l == ".\r\n" {
			return true
		}
	}
}

// hasCommand reports whether a recorded line starts with prefix
// (case-insensitive).
func hasCommand(cmds []string, prefix string) bool {
	for _, c := range cmds {
		if strings.HasPrefix(strings.ToUpper(c), strings.ToUpper(prefix)) {
			return true
		}
	}
	return false
}

// asReply returns the *Reply in err's chain, failing the test if none.
func asReply(t *testing.T, err error) *Reply {
	t.Helper()
	var r *Reply
	if !errors.As(err, &r) {
		t.Fatalf("error %v (%T) does not wrap a *Reply", err, err)
	}
	return r
}

// fast returns short timeouts for tests of misbehaving servers.
func fast() Timeouts {
	const d = 300 * time.Millisecond
	return Timeouts{Greeting: d, Command: d, DataInit: d, DataBlock: d, DataTerm: d}
}

// send is Send with a background context and a test deadline.
func send(c *Client, from string, p MailParams, rcpts []Rcpt, body string) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Send(ctx, from, p, rcpts, strings.NewReader(body))
}

// rcpts builds recipients without DSN parameters.
func rcpts(addrs ...string) []Rcpt {
	out := make([]Rcpt, len(addrs))
	for i, a := range addrs {
		out[i] = Rcpt{Addr: a}
	}
	return out
}
