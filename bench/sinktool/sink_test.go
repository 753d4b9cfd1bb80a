package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func startSink(t *testing.T, starttls bool) (*sink, string) {
	t.Helper()
	s := &sink{}
	if starttls {
		cert, err := selfSigned(sinkHost)
		if err != nil {
			t.Fatal(err)
		}
		s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s, ln.Addr().String()
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (c *client) send(s string) { c.t.Helper(); fmt.Fprint(c.c, s) }

// expect reads one reply and checks its code.
func (c *client) expect(code string) string {
	c.t.Helper()
	var all string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("want %s: %v", code, err)
		}
		all += line
		if len(line) >= 4 && line[3] == ' ' {
			if line[:3] != code {
				c.t.Fatalf("want %s, got %q", code, all)
			}
			return all
		}
	}
}

func dialSink(t *testing.T, addr string) *client {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	cl.expect("220")
	return cl
}

func TestSinkPipelinedTransactions(t *testing.T) {
	s, addr := startSink(t, false)
	c := dialSink(t, addr)
	c.send("EHLO x\r\n")
	if r := c.expect("250"); strings.Contains(r, "STARTTLS") || !strings.Contains(r, "PIPELINING") {
		t.Fatalf("EHLO: %q", r)
	}
	sent := time.Now().Add(-50 * time.Millisecond).UnixNano()
	long := strings.Repeat("y", 200<<10) // longer than the read buffer
	// two pipelined transactions; the first has dot-stuffed lines that
	// look like the end, a long line, and a bench header
	c.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send(fmt.Sprintf("Subject: x\r\nx-bench-sent: %d\r\n\r\n..\r\n.x\r\n%s\r\n.\r\n", sent, long))
	c.expect("250")
	c.send("mail from:<a@b>\r\nrcpt to:<c@d>\r\ndata\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send("Subject: y\r\n\r\nX-Bench-Sent: 1\r\n.\r\nRSET\r\nNOOP\r\nDATA\r\nFOO\r\nQUIT\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("250")
	c.expect("503")
	c.expect("502")
	c.expect("221")
	st := s.status()
	if st.Messages != 2 || st.TLSMessages != 0 || st.Probes != 1 {
		t.Fatalf("status %+v", st)
	}
	if st.P50 < 50 || st.P50 > 5000 {
		t.Fatalf("latency %v ms", st.P50)
	}
}

func TestSinkSTARTTLS(t *testing.T) {
	s, addr := startSink(t, true)
	c := dialSink(t, addr)
	c.send("EHLO x\r\n")
	if r := c.expect("250"); !strings.Contains(r, "250-STARTTLS") {
		t.Fatalf("EHLO: %q", r)
	}
	c.send("STARTTLS\r\n")
	c.expect("220")
	tc := tls.Client(c.c, &tls.Config{ServerName: sinkHost, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != sinkHost {
		t.Fatalf("CN %q", cn)
	}
	c.c, c.br = tc, bufio.NewReader(tc)
	c.send("EHLO x\r\n")
	if r := c.expect("250"); strings.Contains(r, "STARTTLS") {
		t.Fatalf("EHLO after TLS: %q", r)
	}
	c.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	c.expect("250")
	c.expect("221")
	if st := s.status(); st.Messages != 1 || st.TLSMessages != 1 || st.TLSConns != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestProbeToSink(t *testing.T) {
	s, addr := startSink(t, false)
	p := &prober{to: addr, helo: "probe.test", from: "a@b", rcpt: "c@d", body: padBody(100 << 10)}
	for i := range 3 {
		if err := p.send(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	p.quit()
	if st := s.status(); st.Messages != 3 || st.Probes != 3 {
		t.Fatalf("status %+v", st)
	}
	if n := len(padBody(100 << 10)); n != 100<<10 {
		t.Fatalf("padBody: %d bytes", n)
	}
}

func TestVerbNoAlloc(t *testing.T) {
	line := []byte("mail FROM:<a@b>\r\n")
	if n := testing.AllocsPerRun(100, func() { _ = verb(line) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
