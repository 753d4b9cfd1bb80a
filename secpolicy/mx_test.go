package secpolicy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

func hostNames(hosts []MXHost) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, h.Name)
	}
	return out
}

// addressQueries counts the A and AAAA queries made for name.
func addressQueries(srv *testnet.DNSServer, name string) int {
	return srv.QueryCount(name, dns.TypeA) + srv.QueryCount(name, dns.TypeAAAA)
}

func TestMX01_PreferenceOrderAndShuffle(t *testing.T) {
	z := testnet.NewZone(
		"example.test. 300 IN MX 20 c.example.test.",
		"example.test. 300 IN MX 10 A.example.test.",
		"example.test. 300 IN MX 10 b.example.test.",
		"example.test. 300 IN MX 30 d.example.test",
		"example.test. 300 IN MX 40 a.example.test.", // duplicate host: keeps preference 10
	)
	z.Sign("example.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	seen := map[string]int{}
	for range 200 {
		res, err := r.LookupMX(context.Background(), "Example.Test")
		if err != nil {
			t.Fatalf("LookupMX: %v", err)
		}
		if res.Domain != "example.test." || res.Security != Secure || res.NullMX || res.NoDomain {
			t.Fatalf("result %+v", res)
		}
		names := hostNames(res.Hosts)
		if len(names) != 4 || !slices.Equal(names[2:], []string{"c.example.test.", "d.example.test."}) {
			t.Fatalf("hosts %v, want {a,b} then c, d", names)
		}
		prefs := []uint16{res.Hosts[0].Preference, res.Hosts[1].Preference, res.Hosts[2].Preference, res.Hosts[3].Preference}
		if !slices.Equal(prefs, []uint16{10, 10, 20, 30}) {
			t.Fatalf("preferences %v", prefs)
		}
		for _, h := range res.Hosts {
			if h.Implicit {
				t.Fatalf("explicit MX marked implicit: %+v", h)
			}
		}
		seen[names[0]+" "+names[1]]++
	}
	if seen["a.example.test. b.example.test."] == 0 || seen["b.example.test. a.example.test."] == 0 || len(seen) != 2 {
		t.Errorf("equal preferences not shuffled over 200 runs: %v", seen)
	}
	if n := srv.QueryCount("example.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d MX queries for 200 lookups, want 1 (cached)", n)
	}
}

func TestMX01_TargetForms(t *testing.T) {
	z := testnet.NewZone(
		"self.test. 300 IN MX 10 self.test.",
		"self.test. 300 IN A 127.0.0.2",
		"literal.test. 300 IN MX 10 127.0.0.7.",
		"insecure.test. 300 IN MX 10 mx.insecure.test.",
	)
	z.Sign("self.test.")
	z.Sign("literal.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		domain   string
		hosts    []string
		security Security
	}{
		{"self.test", []string{"self.test."}, Secure},
		{"literal.test", []string{"127.0.0.7."}, Secure},
		{"insecure.test.", []string{"mx.insecure.test."}, Insecure},
	}
	for _, tt := range tests {
		res, err := r.LookupMX(context.Background(), tt.domain)
		if err != nil {
			t.Fatalf("LookupMX(%s): %v", tt.domain, err)
		}
		if !slices.Equal(hostNames(res.Hosts), tt.hosts) || res.Security != tt.security || res.Hosts[0].Implicit {
			t.Errorf("LookupMX(%s) = %+v", tt.domain, res)
		}
	}

	// An MX naming an IP literal yields that address without a query.
	srv.ResetQueries()
	h, err := r.LookupHost(context.Background(), "127.0.0.7.")
	if err != nil || !slices.Equal(h.Addrs, []netip.Addr{netip.MustParseAddr("127.0.0.7")}) || h.Security != Insecure {
		t.Errorf("LookupHost(IP literal) = %+v, %v", h, err)
	}
	if q := srv.Queries(); len(q) != 0 {
		t.Errorf("queries for an IP literal: %v", q)
	}
}

func TestMX02_ImplicitMX(t *testing.T) {
	z := testnet.NewZone(
		"signed.test. 300 IN A 127.0.0.2",
		"signed.test. 300 IN AAAA ::1",
		"unsigned.test. 300 IN A 127.0.0.3",
		"v6only.signed.test. 300 IN AAAA ::1",
		"txtonly.signed.test. 300 IN TXT \"no mail here\"",
		"afail.test. 300 IN TXT \"x\"",
	)
	z.Sign("signed.test.")
	z.Fail("afail.test.", dns.TypeA, dns.RcodeServerFailure)
	z.Fail("afail.test.", dns.TypeAAAA, dns.RcodeServerFailure)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		domain   string
		security Security
		wantErr  bool
	}{
		{"signed.test", Secure, false},
		{"unsigned.test", Insecure, false},
		{"v6only.signed.test", Secure, false},
		{"txtonly.signed.test", Secure, false}, // no addresses: the caller finds none
		{"afail.test", Insecure, true},         // address lookups fail: defer (DNS02)
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			res, err := r.LookupMX(context.Background(), tt.domain)
			if tt.wantErr {
				if !IsTemporary(err) {
					t.Fatalf("LookupMX = %+v, %v; want a temporary error", res, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupMX: %v", err)
			}
			want := []MXHost{{Name: tt.domain + ".", Implicit: true}}
			if !slices.Equal(res.Hosts, want) || res.NullMX || res.NoDomain {
				t.Errorf("Hosts = %+v, want %+v", res.Hosts, want)
			}
			if res.Security != tt.security {
				t.Errorf("Security = %v, want %v (from the address records)", res.Security, tt.security)
			}
		})
	}
}

func TestMX02_NXDomain(t *testing.T) {
	z := testnet.NewZone("exists.signed.test. 300 IN A 127.0.0.2")
	z.Sign("signed.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	for _, tt := range []struct {
		domain   string
		security Security
	}{
		{"nope.signed.test", Secure},
		{"nope.unsigned.test", Insecure},
	} {
		res, err := r.LookupMX(context.Background(), tt.domain)
		if err != nil {
			t.Fatalf("LookupMX(%s): %v", tt.domain, err)
		}
		if !res.NoDomain || res.NullMX || len(res.Hosts) != 0 || res.Security != tt.security {
			t.Errorf("LookupMX(%s) = %+v, want NoDomain, %v", tt.domain, res, tt.security)
		}
		if n := addressQueries(srv, tt.domain); n != 0 {
			t.Errorf("%s: %d address queries after NXDOMAIN", tt.domain, n)
		}
	}
}

func TestMX03_NullMX(t *testing.T) {
	z := testnet.NewZone(
		"null.test. 300 IN MX 0 .",
		"null.test. 300 IN A 127.0.0.2",
		"mixed.test. 300 IN MX 0 .",
		"mixed.test. 300 IN MX 10 mx.mixed.test.",
		"nonzero.test. 300 IN MX 10 .",
	)
	z.Sign("null.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		domain   string
		nullMX   bool
		hosts    []string
		security Security
	}{
		{"null.test", true, nil, Secure},
		{"mixed.test", false, []string{"mx.mixed.test."}, Insecure}, // "." among others is ignored
		{"nonzero.test", false, nil, Insecure},                      // not RFC 7505's "MX 0 .": no usable host
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			res, err := r.LookupMX(context.Background(), tt.domain)
			if err != nil {
				t.Fatalf("LookupMX: %v", err)
			}
			if res.NullMX != tt.nullMX || !slices.Equal(hostNames(res.Hosts), tt.hosts) || res.NoDomain || res.Security != tt.security {
				t.Errorf("LookupMX = %+v, want NullMX %v hosts %v %v", res, tt.nullMX, tt.hosts, tt.security)
			}
			if n := addressQueries(srv, tt.domain) + addressQueries(srv, "."); n != 0 {
				t.Errorf("%d address queries, want none (MX03)", n)
			}
		})
	}
}

func TestMX04_ServfailNeverFallsBackToA(t *testing.T) {
	z := testnet.NewZone(
		"alias.test. 300 IN CNAME servfail.test.",
	)
	for _, d := range []string{"servfail.test.", "refused.test.", "timeout.test.", "alias.test."} {
		// Every domain has addresses that a fallback could wrongly use.
		z.Add(d+" 300 IN A 127.0.0.2", d+" 300 IN AAAA ::1")
	}
	z.Sign("test.")
	z.Fail("servfail.test.", dns.TypeMX, dns.RcodeServerFailure)
	z.Fail("refused.test.", dns.TypeMX, dns.RcodeRefused)
	z.Drop("timeout.test.", dns.TypeMX)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		domain string
		rcode  int
	}{
		{"servfail.test", dns.RcodeServerFailure},
		{"refused.test", dns.RcodeRefused},
		{"timeout.test", -1},
		{"alias.test", dns.RcodeServerFailure}, // CNAME to a bogus MX RRset
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			res, err := r.LookupMX(context.Background(), tt.domain)
			var le *LookupError
			if !errors.As(err, &le) || le.Rcode != tt.rcode || !IsTemporary(err) {
				t.Fatalf("LookupMX = %+v, %v; want a temporary *LookupError with rcode %d", res, err, tt.rcode)
			}
			if len(res.Hosts) != 0 || res.NullMX || res.NoDomain {
				t.Errorf("failed MX lookup returned hosts or a verdict: %+v", res)
			}
			if n := addressQueries(srv, tt.domain); n != 0 {
				t.Errorf("%d A/AAAA queries for %s after the MX lookup failed; want none", n, tt.domain)
			}
		})
	}
	for _, q := range srv.Queries() {
		if q.Type != dns.TypeMX {
			t.Errorf("unexpected query %v", q)
		}
	}
}

func TestMX05_HostAddressFailure(t *testing.T) {
	z := testnet.NewZone(
		"both.signed.test. 300 IN A 127.0.0.2",
		"both.signed.test. 300 IN AAAA ::1",
		"both.signed.test. 300 IN A 127.0.0.2", // duplicate, ignored
		"v4.unsigned.test. 300 IN A 127.0.0.3",
		"afail.signed.test. 300 IN AAAA ::1",
		"aaaafail.signed.test. 300 IN A 127.0.0.4",
		"failnodata.signed.test. 300 IN TXT \"x\"",
		"bothfail.signed.test. 300 IN TXT \"x\"",
		"atimeout.signed.test. 300 IN AAAA ::1",
		"nodata.signed.test. 300 IN TXT \"x\"",
	)
	z.Sign("signed.test.")
	z.Fail("afail.signed.test.", dns.TypeA, dns.RcodeServerFailure)
	z.Fail("aaaafail.signed.test.", dns.TypeAAAA, dns.RcodeServerFailure)
	z.Fail("failnodata.signed.test.", dns.TypeAAAA, dns.RcodeServerFailure)
	z.Fail("bothfail.signed.test.", dns.TypeANY, dns.RcodeServerFailure)
	z.Drop("atimeout.signed.test.", dns.TypeA)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	v4 := netip.MustParseAddr("127.0.0.2")
	tests := []struct {
		host     string
		addrs    []string
		security Security
		wantErr  bool
	}{
		{"both.signed.test", []string{v4.String(), "::1"}, Secure, false},
		{"v4.unsigned.test", []string{"127.0.0.3"}, Insecure, false},
		{"afail.signed.test", []string{"::1"}, Secure, false},
		{"aaaafail.signed.test", []string{"127.0.0.4"}, Secure, false},
		{"atimeout.signed.test", []string{"::1"}, Secure, false},
		{"nodata.signed.test", nil, Secure, false},      // both succeed without data
		{"nxdomain.signed.test", nil, Secure, false},    // the host does not exist
		{"failnodata.signed.test", nil, Insecure, true}, // one failed, the other empty
		{"bothfail.signed.test", nil, Insecure, true},   // both failed
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			h, err := r.LookupHost(context.Background(), tt.host)
			if tt.wantErr {
				var le *LookupError
				if !errors.As(err, &le) || !IsTemporary(err) {
					t.Fatalf("LookupHost = %+v, %v; want a temporary *LookupError", h, err)
				}
				if len(h.Addrs) != 0 {
					t.Errorf("addresses with an error: %v", h.Addrs)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupHost: %v", err)
			}
			var got []string
			for _, a := range h.Addrs {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.addrs) || h.Security != tt.security || h.Host != tt.host+"." {
				t.Errorf("LookupHost = %+v, want %v %v", h, tt.addrs, tt.security)
			}
		})
	}

	// The security is the weakest of the two answers: here A comes from
	// the cache as secure, AAAA arrives after the zone lost its signature.
	z.Add("mixed.signed.test. 300 IN A 127.0.0.5", "mixed.signed.test. 300 IN AAAA ::1")
	if a, err := r.Lookup(context.Background(), "mixed.signed.test", dns.TypeA); err != nil || a.Security != Secure {
		t.Fatalf("A lookup: %+v, %v", a, err)
	}
	z.Unsign("signed.test.")
	h, err := r.LookupHost(context.Background(), "mixed.signed.test")
	if err != nil || h.Security != Insecure {
		t.Errorf("mixed security: %+v, %v; want Insecure", h, err)
	}
}
