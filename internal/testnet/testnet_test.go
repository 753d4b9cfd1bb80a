package testnet

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

func query(t *testing.T, addr, proto, name string, qtype uint16, do bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.SetEdns0(1232, do)
	c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], proto, err)
	}
	return resp
}

func TestDNSServer(t *testing.T) {
	z := NewZone(
		"signed.test. 300 IN MX 10 mx.signed.test.",
		"mx.signed.test. 300 IN A 127.0.0.2",
		"alias.signed.test. 300 IN CNAME mx.signed.test.",
		"alias.unsigned.test. 300 IN CNAME mx.signed.test.",
		"dangling.signed.test. 300 IN CNAME gone.signed.test.",
		"_25._tcp.deep.signed.test. 300 IN TXT \"x\"",
	)
	z.Sign("signed.test.")
	z.Fail("broken.signed.test.", dns.TypeMX, dns.RcodeServerFailure)
	srv := StartDNS(t, z)

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		do       bool
		rcode    int
		answers  int
		ad       bool
		soaInNs  bool
		answerTy uint16
	}{
		{"positive signed DO", "signed.test.", dns.TypeMX, true, dns.RcodeSuccess, 1, true, false, dns.TypeMX},
		{"positive signed no DO", "signed.test.", dns.TypeMX, false, dns.RcodeSuccess, 1, false, false, dns.TypeMX},
		{"case insensitive", "MX.Signed.TEST.", dns.TypeA, true, dns.RcodeSuccess, 1, true, false, dns.TypeA},
		{"nodata", "mx.signed.test.", dns.TypeAAAA, true, dns.RcodeSuccess, 0, true, true, 0},
		{"nxdomain signed", "nope.signed.test.", dns.TypeA, true, dns.RcodeNameError, 0, true, true, 0},
		{"nxdomain unsigned", "nope.other.test.", dns.TypeA, true, dns.RcodeNameError, 0, false, true, 0},
		{"empty non-terminal", "_tcp.deep.signed.test.", dns.TypeTXT, true, dns.RcodeSuccess, 0, true, true, 0},
		{"cname signed chain", "alias.signed.test.", dns.TypeA, true, dns.RcodeSuccess, 2, true, false, dns.TypeCNAME},
		{"cname unsigned link", "alias.unsigned.test.", dns.TypeA, true, dns.RcodeSuccess, 2, false, false, dns.TypeCNAME},
		{"cname to nxdomain", "dangling.signed.test.", dns.TypeA, true, dns.RcodeNameError, 1, true, true, dns.TypeCNAME},
		{"fail", "broken.signed.test.", dns.TypeMX, true, dns.RcodeServerFailure, 0, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := query(t, srv.Addr(), "udp", tt.qname, tt.qtype, tt.do)
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if len(resp.Answer) != tt.answers {
				t.Errorf("answers = %v, want %d", resp.Answer, tt.answers)
			}
			if tt.answers > 0 && resp.Answer[0].Header().Rrtype != tt.answerTy {
				t.Errorf("first answer %v, want type %s", resp.Answer[0], dns.TypeToString[tt.answerTy])
			}
			if resp.AuthenticatedData != tt.ad {
				t.Errorf("AD = %v, want %v", resp.AuthenticatedData, tt.ad)
			}
			hasSOA := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == dns.TypeSOA && resp.Ns[0].Header().Ttl == 60
			if hasSOA != tt.soaInNs {
				t.Errorf("authority = %v, want SOA with TTL 60: %v", resp.Ns, tt.soaInNs)
			}
		})
	}

	t.Run("truncate forces TCP", func(t *testing.T) {
		z.Truncate("signed.test.")
		if resp := query(t, srv.Addr(), "udp", "signed.test.", dns.TypeMX, true); !resp.Truncated || len(resp.Answer) != 0 {
			t.Errorf("UDP answer not truncated: %v", resp)
		}
		if resp := query(t, srv.Addr(), "tcp", "signed.test.", dns.TypeMX, true); resp.Truncated || len(resp.Answer) != 1 {
			t.Errorf("TCP answer: %v", resp)
		}
	})

	t.Run("edit while running", func(t *testing.T) {
		z.Add("new.signed.test. 60 IN A 127.0.0.9")
		if resp := query(t, srv.Addr(), "udp", "new.signed.test.", dns.TypeA, true); len(resp.Answer) != 1 {
			t.Errorf("added record not served: %v", resp)
		}
		z.Remove("new.signed.test.", dns.TypeA)
		if resp := query(t, srv.Addr(), "udp", "new.signed.test.", dns.TypeA, true); resp.Rcode != dns.RcodeNameError {
			t.Errorf("removed record still served: %v", resp)
		}
	})

	t.Run("drop and restore", func(t *testing.T) {
		z.Drop("mx.signed.test.", dns.TypeA)
		m := new(dns.Msg).SetQuestion("mx.signed.test.", dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
		var ne net.Error
		if _, _, err := c.Exchange(m, srv.Addr()); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dropped query: err = %v, want timeout", err)
		}
		z.Restore("mx.signed.test.", dns.TypeA)
		if resp := query(t, srv.Addr(), "udp", "mx.signed.test.", dns.TypeA, true); len(resp.Answer) != 1 {
			t.Errorf("restored query: %v", resp)
		}
	})

	t.Run("query log", func(t *testing.T) {
		srv.ResetQueries()
		query(t, srv.Addr(), "tcp", "Signed.Test.", dns.TypeMX, true)
		got := srv.Queries()
		want := []Query{{Name: "signed.test.", Type: dns.TypeMX, Proto: "tcp", DO: true}}
		if !slices.Equal(got, want) {
			t.Errorf("Queries() = %v, want %v", got, want)
		}
		if n := srv.QueryCount("signed.test.", dns.TypeANY); n != 1 {
			t.Errorf("QueryCount = %d, want 1", n)
		}
	})
}

func TestCA(t *testing.T) {
	ca := NewCA(t)
	block, _ := pem.Decode(ca.RootPEM())
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("RootPEM does not decode")
	}
	if !ca.Certificate().Equal(mustParse(t, block.Bytes)) {
		t.Errorf("RootPEM is not the root")
	}

	leaf := ca.Issue("mx.example.test", "127.0.0.2")
	if leaf.Leaf == nil || len(leaf.Certificate) != 1 {
		t.Fatalf("Issue: Leaf %v, chain length %d", leaf.Leaf, len(leaf.Certificate))
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "mx.example.test", Roots: ca.Pool()}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	if err := leaf.Leaf.VerifyHostname("127.0.0.2"); err != nil {
		t.Errorf("IP name: %v", err)
	}

	past := time.Now().Add(-12 * time.Hour)
	chained := ca.IssueWith(IssueOptions{
		Names: []string{"mx.example.test"}, IncludeIntermediate: true, IncludeRoot: true,
		NotBefore: past, NotAfter: past.Add(time.Hour),
	})
	if len(chained.Certificate) != 3 || !mustParse(t, chained.Certificate[1]).Equal(ca.Intermediate()) {
		t.Fatalf("chain = %d certificates, want leaf, intermediate, root", len(chained.Certificate))
	}
	inter := x509.NewCertPool()
	inter.AddCert(ca.Intermediate())
	opts := x509.VerifyOptions{DNSName: "mx.example.test", Roots: ca.Pool(), Intermediates: inter, CurrentTime: past.Add(time.Minute)}
	if _, err := chained.Leaf.Verify(opts); err != nil {
		t.Errorf("chained leaf does not verify at its time: %v", err)
	}
	opts.CurrentTime = time.Time{}
	if _, err := chained.Leaf.Verify(opts); err == nil {
		t.Errorf("expired leaf verifies now")
	}

	self := SelfSigned(t, "self.test")
	if _, err := self.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Errorf("self-signed certificate verifies against the CA")
	}
	if _, err := tls.X509KeyPair(pemChain(self), pemKey(t, self)); err != nil {
		t.Errorf("self-signed pair unusable: %v", err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemChain(c tls.Certificate) []byte {
	var out []byte
	for _, der := range c.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

func pemKey(t *testing.T, c tls.Certificate) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestSMTPReceiver(t *testing.T) {
	ca := NewCA(t)
	cert := ca.Issue("mx.example.test")
	rx := StartSMTP(t, SMTPOptions{
		Addr:             "127.0.0.2:0",
		TLSCert:          &cert,
		EnableDSN:        true,
		EnableREQUIRETLS: true,
		RcptReply: func(rcpt string) *smtp.SMTPError {
			if strings.HasPrefix(rcpt, "bad@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		},
	})
	if !strings.HasPrefix(rx.Addr(), "127.0.0.2:") || rx.Port() == 0 {
		t.Fatalf("Addr = %s", rx.Addr())
	}

	c, err := smtp.DialStartTLS(rx.Addr(), &tls.Config{ServerName: "mx.example.test", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Error("REQUIRETLS not advertised after STARTTLS")
	}
	send := func(to ...string) error {
		if err := c.Mail("a@client.test", &smtp.MailOptions{RequireTLS: true, EnvelopeID: "env1"}); err != nil {
			return err
		}
		for _, rcpt := range to {
			if err := c.Rcpt(rcpt, &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}}); err != nil {
				return err
			}
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte("Subject: hi\r\n\r\nbody\r\n")); err != nil {
			return err
		}
		return w.Close()
	}
	if err := send("b@example.test"); err != nil {
		t.Fatal(err)
	}
	var serr *smtp.SMTPError
	if err := c.Mail("a@client.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bad@example.test", nil); !errors.As(err, &serr) || serr.Code != 550 {
		t.Errorf("RcptReply: err = %v, want 550", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := send("c@example.test"); err != nil { // same connection, reused
		t.Fatal(err)
	}
	_ = c.Quit()

	msgs := rx.WaitMessages(t, 2, 5*time.Second)
	m := msgs[0]
	if m.From != "a@client.test" || !slices.Equal(m.To, []string{"b@example.test"}) || string(m.Data) != "Subject: hi\r\n\r\nbody\r\n" {
		t.Errorf("message = %+v", m)
	}
	if !m.TLS || m.TLSVersion < tls.VersionTLS12 || m.ServerName != "mx.example.test" || m.Helo != "localhost" {
		t.Errorf("TLS=%v version=%x SNI=%q HELO=%q", m.TLS, m.TLSVersion, m.ServerName, m.Helo)
	}
	if !m.MailOpts.RequireTLS || m.MailOpts.EnvelopeID != "env1" {
		t.Errorf("MailOpts = %+v", m.MailOpts)
	}
	if n := m.RcptOpts["b@example.test"].Notify; !slices.Equal(n, []smtp.DSNNotify{smtp.DSNNotifyFailure}) {
		t.Errorf("RcptOpts notify = %v", n)
	}
	if msgs[0].ConnID != 1 || msgs[1].ConnID != 1 || rx.Connections() != 1 {
		t.Errorf("ConnIDs %d, %d; Connections %d: want one connection", msgs[0].ConnID, msgs[1].ConnID, rx.Connections())
	}
	if sni := rx.ServerNames(); !slices.Equal(sni, []string{"mx.example.test"}) {
		t.Errorf("ServerNames = %v", sni)
	}

	plain := StartSMTP(t, SMTPOptions{})
	c2, err := smtp.Dial(plain.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c2.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised without a certificate")
	}
	if err := c2.SendMail("a@client.test", []string{"d@example.test"}, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := plain.WaitMessages(t, 1, 5*time.Second); got[0].TLS || got[0].ConnID != 1 || got[0].Helo != "client.test" {
		t.Errorf("plain message: %+v", got[0])
	}
}

func TestRefuse(t *testing.T) {
	addr := Refuse(t, "127.0.0.3")
	if !strings.HasPrefix(addr, "127.0.0.3:") {
		t.Fatalf("Refuse = %s", addr)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("connection to %s accepted", addr)
	}
}
