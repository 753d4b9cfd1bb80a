package secpolicy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

// TestCheckValidation runs the DNSSEC self-check against resolvers that
// validate, do not validate, validate without AD, and cannot be reached.
func TestCheckValidation(t *testing.T) {
	rootSOA := ". 300 IN SOA a.root-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400"
	bogusA := "dnssec-failed.org. 300 IN A 96.99.227.255"
	tests := []struct {
		name  string
		setup func(z *testnet.Zone)
		want  Validation
	}{
		{"validating", func(z *testnet.Zone) {
			z.Add(rootSOA, bogusA)
			z.Sign(".")
			z.Fail(ValidationProbeBogus, dns.TypeA, dns.RcodeServerFailure)
		}, ValidationOK},
		{"not validating", func(z *testnet.Zone) { z.Add(rootSOA, bogusA) }, ValidationOff},
		{"AD passed on without validation", func(z *testnet.Zone) {
			z.Add(rootSOA, bogusA)
			z.Sign(".")
		}, ValidationOff},
		{"validating without AD", func(z *testnet.Zone) {
			z.Add(rootSOA, bogusA)
			z.Fail(ValidationProbeBogus, dns.TypeA, dns.RcodeServerFailure)
		}, ValidationNoAD},
		{"offline resolver", func(z *testnet.Zone) {
			// A resolver without upstream fails every query alike.
			z.Fail(".", dns.TypeANY, dns.RcodeServerFailure)
			z.Fail(ValidationProbeBogus, dns.TypeANY, dns.RcodeServerFailure)
		}, ValidationUnknown},
		{"bogus name gone", func(z *testnet.Zone) {
			z.Add(rootSOA)
			z.Sign(".")
		}, ValidationUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := testnet.NewZone()
			tt.setup(z)
			r := newTestResolver(t, testnet.StartDNS(t, z))
			got := r.CheckValidation(context.Background())
			if got.Result != tt.want {
				t.Errorf("CheckValidation = %v (%s), want %v", got.Result, got.Detail, tt.want)
			}
			if got.Detail == "" {
				t.Error("no detail")
			}
		})
	}
}

// TestCheckValidationNoResolver: with nothing listening, the check says it
// could not tell, quickly.
func TestCheckValidationNoResolver(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	r := NewResolver(ResolverConfig{Addr: addr, Timeout: testTimeout, Logger: discardLogger()})
	start := time.Now()
	got := r.CheckValidation(context.Background())
	if got.Result != ValidationUnknown {
		t.Errorf("CheckValidation = %v (%s), want unknown", got.Result, got.Detail)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestLookupObserve: every Lookup is reported with its outcome.
func TestLookupObserve(t *testing.T) {
	z := testnet.NewZone(
		"signed.test. 300 IN A 192.0.2.1",
		"plain.test. 300 IN A 192.0.2.2",
	)
	z.Sign("signed.test.")
	z.Fail("broken.test.", dns.TypeA, dns.RcodeServerFailure)
	srv := testnet.StartDNS(t, z)
	type obs struct {
		qtype   uint16
		outcome string
	}
	var got []obs
	r := NewResolver(ResolverConfig{Addr: srv.Addr(), Timeout: testTimeout, Logger: discardLogger(),
		Observe: func(qtype uint16, outcome string) { got = append(got, obs{qtype, outcome}) }})
	ctx := context.Background()
	for _, name := range []string{"signed.test", "plain.test", "missing.test", "broken.test", "signed.test"} {
		r.Lookup(ctx, name, dns.TypeA)
	}
	want := []obs{{dns.TypeA, OutcomeSecure}, {dns.TypeA, OutcomeInsecure}, {dns.TypeA, OutcomeNXDomain}, {dns.TypeA, OutcomeError}, {dns.TypeA, OutcomeSecure}}
	if len(got) != len(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("lookup %d: observed %v, want %v", i, got[i], want[i])
		}
	}
}
