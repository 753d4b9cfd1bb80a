package inbound

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

// dnsResolver is a minimal Resolver over a testnet DNS server (the relay's
// own resolver lives in secpolicy, which inbound does not import).
type dnsResolver struct{ addr string }

func (r dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, r.addr)
	if err != nil {
		return nil, err
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode])
	}
	return resp.Answer, nil
}

func (r dnsResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, err
}

func (r dnsResolver) LookupMX(ctx context.Context, domain string) ([]string, error) {
	rrs, err := r.query(ctx, domain, dns.TypeMX)
	var out []string
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, mx.Mx)
		}
	}
	return out, err
}

func (r dnsResolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qt)
		if err != nil {
			return nil, err
		}
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				a, _ := netip.AddrFromSlice(rr.A)
				out = append(out, a.Unmap())
			case *dns.AAAA:
				a, _ := netip.AddrFromSlice(rr.AAAA)
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// listenLoopback listens on 127.0.0.2 (any 127/8 address works on Linux),
// falling back to 127.0.0.1.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

const reportURLForTest = "https://mta-sts.example.org/report/tlsrpt"

func TestSRV04_CheckPublishedRecords(t *testing.T) {
	ca := testnet.NewCA(t)
	goodID := PolicyID(mustRender(t, examplePolicy))
	testingPolicy := examplePolicy
	testingPolicy.Mode = ModeTesting
	shortPolicy := examplePolicy
	shortPolicy.MaxAge = 3600

	type want map[string]Status
	allOK := want{"_mta-sts TXT": StatusOK, "policy host": StatusOK, "policy": StatusOK, "MX hosts": StatusOK, "_smtp._tls TXT": StatusOK}
	with := func(changes want) want {
		w := want{}
		for k, v := range allOK {
			w[k] = v
		}
		for k, v := range changes {
			w[k] = v
		}
		return w
	}
	tests := []struct {
		name       string
		zone       func(z *testnet.Zone)
		served     PolicyConfig  // policy the server serves
		configured *PolicyConfig // nil: the served one
		certNames  []string      // default mta-sts.example.org
		untrusted  bool          // verify with another CA
		noConfig   bool
		want       want
		wantText   string // substring of some message or fix
	}{
		{name: "everything published", want: allOK},
		{name: "other TXT records ignored", zone: func(z *testnet.Zone) {
			z.Add(`_mta-sts.example.org. TXT "site-verification=abc"`)
		}, want: allOK},
		{name: "no relay configuration", noConfig: true, want: allOK, wantText: "no policy for example.org"},
		{name: "no _mta-sts record", zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
		}, want: with(want{"_mta-sts TXT": StatusFail}), wantText: `publish _mta-sts.example.org. TXT "v=STSv1; id=` + goodID + `"`},
		{name: "two _mta-sts records", zone: func(z *testnet.Zone) {
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; id=older"`)
		}, want: with(want{"_mta-sts TXT": StatusFail}), wantText: "keep exactly one"},
		{name: "stale id", zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; id=20240101"`)
		}, want: with(want{"_mta-sts TXT": StatusFail}), wantText: "id=20240101, but the policy this relay serves has id " + goodID},
		{name: "malformed id", zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; id=2024-01-01"`)
		}, want: with(want{"_mta-sts TXT": StatusFail}), wantText: "no valid id"},
		{name: "record split into strings", zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; " "id=` + goodID + `"`)
		}, want: allOK},
		{name: "resolver failure", zone: func(z *testnet.Zone) {
			z.Fail("_mta-sts.example.org.", dns.TypeTXT, dns.RcodeServerFailure)
		}, want: with(want{"_mta-sts TXT": StatusFail}), wantText: "SERVFAIL"},
		{name: "policy host missing", zone: func(z *testnet.Zone) {
			z.Remove("mta-sts.example.org.", dns.TypeANY)
		}, want: with(want{"policy host": StatusFail, "policy": StatusFail}), wantText: "CNAME to this relay"},
		{name: "certificate from an unknown CA", untrusted: true,
			want: with(want{"policy": StatusFail}), wantText: "certificate is not valid"},
		{name: "certificate for another name", certNames: []string{"www.example.org"},
			want: with(want{"policy": StatusFail}), wantText: "certificate for mta-sts.example.org"},
		{name: "served policy differs from the configuration", served: testingPolicy, configured: &examplePolicy,
			want: with(want{"policy": StatusFail, "MX hosts": StatusOK}), wantText: "differs from this relay's configuration"},
		{name: "short max_age", served: shortPolicy, zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; id=` + PolicyID(mustRender(t, shortPolicy)) + `"`)
		}, want: with(want{"policy": StatusWarn}), wantText: "less than a day"},
		{name: "MX outside the policy, enforce", zone: func(z *testnet.Zone) {
			z.Add("example.org. MX 30 backup.example.net.")
		}, want: with(want{"MX hosts": StatusFail}), wantText: "backup.example.net match no mx pattern"},
		{name: "MX outside the policy, testing", served: testingPolicy, zone: func(z *testnet.Zone) {
			z.Remove("_mta-sts.example.org.", dns.TypeTXT)
			z.Add(`_mta-sts.example.org. TXT "v=STSv1; id=` + PolicyID(mustRender(t, testingPolicy)) + `"`)
			z.Add("example.org. MX 30 a.b.mx.example.org.") // the wildcard covers one label only
		}, want: with(want{"MX hosts": StatusWarn}), wantText: "a.b.mx.example.org"},
		{name: "no _smtp._tls record", zone: func(z *testnet.Zone) {
			z.Remove("_smtp._tls.example.org.", dns.TypeTXT)
		}, want: with(want{"_smtp._tls TXT": StatusFail}), wantText: `publish _smtp._tls.example.org. TXT "v=TLSRPTv1; rua=` + reportURLForTest + `"`},
		{name: "two _smtp._tls records", zone: func(z *testnet.Zone) {
			z.Add(`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.org"`)
		}, want: with(want{"_smtp._tls TXT": StatusFail}), wantText: "2 v=TLSRPTv1 records"},
		{name: "rua not a URI senders use", zone: func(z *testnet.Zone) {
			z.Remove("_smtp._tls.example.org.", dns.TypeTXT)
			z.Add(`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=ftp://example.org/r"`)
		}, want: with(want{"_smtp._tls TXT": StatusFail}), wantText: "neither an https: nor a mailto: URI"},
		{name: "rua missing", zone: func(z *testnet.Zone) {
			z.Remove("_smtp._tls.example.org.", dns.TypeTXT)
			z.Add(`_smtp._tls.example.org. TXT "v=TLSRPTv1;"`)
		}, want: with(want{"_smtp._tls TXT": StatusFail}), wantText: "no rua field"},
		{name: "reports go elsewhere", zone: func(z *testnet.Zone) {
			z.Remove("_smtp._tls.example.org.", dns.TypeTXT)
			z.Add(`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.org"`)
		}, want: with(want{"_smtp._tls TXT": StatusWarn}), wantText: "not to this relay"},
		{name: "reports also to this relay", zone: func(z *testnet.Zone) {
			z.Remove("_smtp._tls.example.org.", dns.TypeTXT)
			z.Add(`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.org,` + reportURLForTest + `"`)
		}, want: allOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			served := examplePolicy
			if tt.served.Domain != "" {
				served = tt.served
			}
			names := tt.certNames
			if names == nil {
				names = []string{"mta-sts.example.org"}
			}
			pair := writePair(t, t.TempDir(), "c", ca.Issue(names...))
			srv, err := New(Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{served}})
			if err != nil {
				t.Fatal(err)
			}
			ln := listenLoopback(t)
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Shutdown(context.Background()) })
			host, portStr, _ := net.SplitHostPort(ln.Addr().String())
			port, _ := strconv.Atoi(portStr)

			zone := testnet.NewZone(
				`_mta-sts.example.org. TXT "v=STSv1; id=`+goodID+`"`,
				"mta-sts.example.org. A "+host,
				"example.org. MX 10 mail.example.org.",
				"example.org. MX 20 b.mx.example.org.",
				`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=`+reportURLForTest+`"`,
			)
			if tt.zone != nil {
				tt.zone(zone)
			}
			dnsSrv := testnet.StartDNS(t, zone)

			var roots *x509.CertPool = ca.Pool()
			if tt.untrusted {
				roots = testnet.NewCA(t).Pool()
			}
			opts := CheckOptions{
				Resolver:  dnsResolver{dnsSrv.Addr()},
				RootCAs:   roots,
				Port:      port,
				Timeout:   5 * time.Second,
				ReportURL: reportURLForTest,
			}
			switch {
			case tt.noConfig:
			case tt.configured != nil:
				opts.Policy = tt.configured
			default:
				opts.Policy = &served
			}
			results := Check(context.Background(), "Example.org.", opts)

			var all []string
			got := map[string]Status{}
			for _, r := range results {
				all = append(all, fmt.Sprintf("%s %s: %s (fix: %s)", r.Status, r.Check, r.Message, r.Fix))
				got[r.Check] = r.Status
				if r.Status != StatusOK && r.Fix == "" {
					t.Errorf("%s is %s without a fix", r.Check, r.Status)
				}
			}
			report := strings.Join(all, "\n")
			if len(results) != len(tt.want) {
				t.Errorf("%d results, want %d:\n%s", len(results), len(tt.want), report)
			}
			for check, st := range tt.want {
				if got[check] != st {
					t.Errorf("%s = %q, want %q:\n%s", check, got[check], st, report)
				}
			}
			if tt.wantText != "" && !strings.Contains(report, tt.wantText) {
				t.Errorf("no result mentions %q:\n%s", tt.wantText, report)
			}
		})
	}
}

func TestParseTagList(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		err  bool
	}{
		{"v=STSv1; id=abc", map[string]string{"v": "STSv1", "id": "abc"}, false},
		{"v=STSv1;id=abc;", map[string]string{"v": "STSv1", "id": "abc"}, false},
		{"v=STSv1 ;\tid=abc ; ", map[string]string{"v": "STSv1", "id": "abc"}, false},
		{"v=STSv1; id=abc; ext=1", map[string]string{"v": "STSv1", "id": "abc", "ext": "1"}, false},
		{"v=STSv1;; id=abc", nil, true},
		{"v=STSv1; id", nil, true},
		{"v=STSv1; id=a; id=b", nil, true},
	}
	for _, tt := range tests {
		got, err := parseTagList(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("parseTagList(%q) error %v", tt.in, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) && !tt.err {
			t.Errorf("parseTagList(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
