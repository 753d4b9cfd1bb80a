package testnet

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is a table of DNS records served by a DNSServer as if it were a
// validating recursive resolver: it follows CNAMEs, answers NXDOMAIN for
// names it does not know and NODATA for known names without the asked type,
// and sets AD for names under a signed apex. A Zone is safe for concurrent
// use and may be edited while a server answers from it.
type Zone struct {
	mu        sync.RWMutex
	rrs       map[string][]dns.RR // by lowercase owner name
	signed    map[string]bool     // signed apexes
	fail      map[qkey]int
	drop      map[qkey]bool
	trunc     map[string]bool
	cnameOnly map[string]bool
}

type qkey struct {
	name  string
	qtype uint16
}

// NewZone returns a Zone holding records, each in zone file syntax as
// accepted by Add.
func NewZone(records ...string) *Zone {
	z := &Zone{
		rrs:       make(map[string][]dns.RR),
		signed:    make(map[string]bool),
		fail:      make(map[qkey]int),
		drop:      make(map[qkey]bool),
		trunc:     make(map[string]bool),
		cnameOnly: make(map[string]bool),
	}
	z.Add(records...)
	return z
}

func canon(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Add parses each record with dns.NewRR ("example.test. 300 IN MX 10
// mx1.example.test."; the TTL defaults to 3600) and adds it. Add panics on
// text that does not parse: zone data in tests are literals.
func (z *Zone) Add(records ...string) {
	rrs := make([]dns.RR, 0, len(records))
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(fmt.Sprintf("testnet: bad record %q: %v", s, err))
		}
		if rr == nil {
			panic(fmt.Sprintf("testnet: empty record %q", s))
		}
		rrs = append(rrs, rr)
	}
	z.AddRR(rrs...)
}

// AddRR adds records built in code (for example TLSA records computed from
// a certificate). Exact duplicates are ignored.
func (z *Zone) AddRR(rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		h := rr.Header()
		h.Name = canon(h.Name)
		dup := false
		for _, old := range z.rrs[h.Name] {
			if dns.IsDuplicate(old, rr) {
				dup = true
				break
			}
		}
		if !dup {
			z.rrs[h.Name] = append(z.rrs[h.Name], rr)
		}
	}
}

// Remove deletes the records of type qtype owned by name; dns.TypeANY
// deletes all of name's records.
func (z *Zone) Remove(name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	name = canon(name)
	if qtype == dns.TypeANY {
		delete(z.rrs, name)
		return
	}
	kept := z.rrs[name][:0:0]
	for _, rr := range z.rrs[name] {
		if rr.Header().Rrtype != qtype {
			kept = append(kept, rr)
		}
	}
	if len(kept) == 0 {
		delete(z.rrs, name)
	} else {
		z.rrs[name] = kept
	}
}

// Sign marks every name at or under apex as signed: answers about them,
// positive and negative, get AD=1 when the query had DO or AD set. A CNAME
// chain gets AD only when every name in it is signed.
func (z *Zone) Sign(apex string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.signed[canon(apex)] = true
}

// Unsign undoes Sign for apex.
func (z *Zone) Unsign(apex string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.signed, canon(apex))
}

// Fail makes queries for name/qtype (dns.TypeANY: every type) answer with
// rcode, for example dns.RcodeServerFailure to simulate a bogus answer. It
// also applies when name is reached through a CNAME chain.
func (z *Zone) Fail(name string, qtype uint16, rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.fail[qkey{canon(name), qtype}] = rcode
}

// Drop makes queries for name/qtype (dns.TypeANY: every type) go
// unanswered, so that the client times out.
func (z *Zone) Drop(name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.drop[qkey{canon(name), qtype}] = true
}

// Restore undoes Fail and Drop for name/qtype.
func (z *Zone) Restore(name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := qkey{canon(name), qtype}
	delete(z.fail, k)
	delete(z.drop, k)
}

// Truncate makes UDP answers for queries about name empty with TC=1, so that
// clients must retry over TCP.
func (z *Zone) Truncate(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.trunc[canon(name)] = true
}

// CNAMEOnly makes answers that reach name's CNAME stop there, as from a
// server that does not chase CNAMEs: the client has to query the target
// itself.
func (z *Zone) CNAMEOnly(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.cnameOnly[canon(name)] = true
}

func (z *Zone) rule(m map[qkey]int, name string, qtype uint16) (int, bool) {
	if v, ok := m[qkey{name, qtype}]; ok {
		return v, true
	}
	v, ok := m[qkey{name, dns.TypeANY}]
	return v, ok
}

func (z *Zone) dropped(name string, qtype uint16) bool {
	return z.drop[qkey{name, qtype}] || z.drop[qkey{name, dns.TypeANY}]
}

// isSigned reports whether name is at or under a signed apex.
func (z *Zone) isSigned(name string) bool {
	for apex := range z.signed {
		if dns.IsSubDomain(apex, name) {
			return true
		}
	}
	return false
}

// exists reports whether name owns records or is an empty non-terminal.
func (z *Zone) exists(name string) bool {
	if len(z.rrs[name]) > 0 {
		return true
	}
	for owner := range z.rrs {
		if dns.IsSubDomain(name, owner) {
			return true
		}
	}
	return false
}

// soaFor returns the SOA placed in the authority section of a negative
// answer about name: the closest enclosing SOA of the table, or else a
// synthesized one with TTL and MINIMUM 60.
func (z *Zone) soaFor(name string) dns.RR {
	labels := dns.SplitDomainName(name)
	for i := range labels {
		owner := dns.Fqdn(strings.Join(labels[i:], "."))
		for _, rr := range z.rrs[owner] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return dns.Copy(rr)
			}
		}
	}
	apex := "."
	for a := range z.signed {
		if dns.IsSubDomain(a, name) && dns.CountLabel(a) > dns.CountLabel(apex) {
			apex = a
		}
	}
	if apex == "." && len(labels) > 0 {
		apex = dns.Fqdn(labels[len(labels)-1])
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:      "ns." + strings.TrimPrefix(apex, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(apex, "."),
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  60,
	}
}

// maxChase bounds the CNAME chain the server follows.
const maxChase = 16

// respond builds the answer to req; drop reports that no answer is sent.
func (z *Zone) respond(req *dns.Msg, proto string) (resp *dns.Msg, drop bool) {
	resp = new(dns.Msg)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		return resp.SetRcodeFormatError(req), false
	}
	resp.SetReply(req)
	resp.RecursionAvailable = true
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	wantAD := do || req.AuthenticatedData
	if opt != nil {
		defer func() {
			if resp != nil && resp.IsEdns0() == nil {
				resp.SetEdns0(1232, do)
			}
		}()
	}

	z.mu.RLock()
	defer z.mu.RUnlock()

	q := req.Question[0]
	name := canon(q.Name)
	if proto == "udp" && z.trunc[name] {
		resp.Truncated = true
		return resp, false
	}

	signed := true
	cur := name
	for hop := 0; ; hop++ {
		if hop > maxChase {
			return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure), false
		}
		if z.dropped(cur, q.Qtype) {
			return nil, true
		}
		if rc, ok := z.rule(z.fail, cur, q.Qtype); ok {
			return new(dns.Msg).SetRcode(req, rc), false
		}
		signed = signed && z.isSigned(cur)

		var recs []dns.RR
		var cname dns.RR
		for _, rr := range z.rrs[cur] {
			switch t := rr.Header().Rrtype; {
			case t == q.Qtype || q.Qtype == dns.TypeANY:
				recs = append(recs, dns.Copy(rr))
			case t == dns.TypeCNAME:
				cname = rr
			}
		}
		if len(recs) > 0 {
			resp.Answer = append(resp.Answer, recs...)
			break
		}
		if cname != nil {
			resp.Answer = append(resp.Answer, dns.Copy(cname))
			if z.cnameOnly[cur] {
				break
			}
			cur = canon(cname.(*dns.CNAME).Target)
			continue
		}
		// Negative answer about the end of the chain (RFC 6604 §3).
		if !z.exists(cur) {
			resp.Rcode = dns.RcodeNameError
		}
		resp.Ns = append(resp.Ns, z.soaFor(cur))
		break
	}
	resp.AuthenticatedData = wantAD && signed
	return resp, false
}

// Query is one query received by a DNSServer.
type Query struct {
	Name  string // lowercase, fully qualified
	Type  uint16
	Proto string // "udp" or "tcp"
	DO    bool   // DNSSEC OK bit of the EDNS0 OPT record
	AD    bool   // AD bit of the query
}

// String formats q as "name TYPE proto".
func (q Query) String() string {
	return fmt.Sprintf("%s %s %s", q.Name, dns.TypeToString[q.Type], q.Proto)
}

// DNSServer serves a Zone over UDP and TCP on the same loopback port.
type DNSServer struct {
	zone *Zone
	addr string

	mu      sync.Mutex
	queries []Query
}

// StartDNS starts a DNS server for zone on 127.0.0.1 with a free port,
// UDP and TCP, stopped by t.Cleanup. A nil zone means an empty Zone.
func StartDNS(t testing.TB, zone *Zone) *DNSServer {
	t.Helper()
	if zone == nil {
		zone = NewZone()
	}
	s := &DNSServer{zone: zone}

	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testnet: DNS UDP listener: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("testnet: DNS TCP listener on the UDP port: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	servers := []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)},
		{Listener: ln, Handler: dns.HandlerFunc(s.serve)},
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		})
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("testnet: DNS server: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("testnet: DNS server did not start")
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			_ = srv.ShutdownContext(ctx)
		}
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	return s
}

// Addr returns the server's address, "127.0.0.1:port".
func (s *DNSServer) Addr() string { return s.addr }

// Zone returns the zone the server answers from.
func (s *DNSServer) Zone() *Zone { return s.zone }

// Queries returns the queries received so far, in order.
func (s *DNSServer) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// QueryCount returns how many queries for name/qtype were received, over
// both transports; dns.TypeANY counts every type.
func (s *DNSServer) QueryCount(name string, qtype uint16) int {
	name = canon(name)
	n := 0
	for _, q := range s.Queries() {
		if q.Name == name && (qtype == dns.TypeANY || q.Type == qtype) {
			n++
		}
	}
	return n
}

// ResetQueries forgets the queries received so far.
func (s *DNSServer) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	if len(req.Question) > 0 {
		opt := req.IsEdns0()
		s.mu.Lock()
		s.queries = append(s.queries, Query{
			Name:  canon(req.Question[0].Name),
			Type:  req.Question[0].Qtype,
			Proto: proto,
			DO:    opt != nil && opt.Do(),
			AD:    req.AuthenticatedData,
		})
		s.mu.Unlock()
	}
	resp, drop := s.zone.respond(req, proto)
	if drop {
		return
	}
	if proto == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}
