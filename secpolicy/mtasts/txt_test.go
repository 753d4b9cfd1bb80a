package mtasts

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/secpolicy"
)

func TestSTS01_TXTDiscovery(t *testing.T) {
	const name = "_mta-sts.example.test. 300 IN TXT "
	tests := []struct {
		name    string
		records []string
		wantID  string // "" = not found
	}{
		{"simple", []string{name + `"v=STSv1; id=abc123"`}, "abc123"},
		{"trailing semicolon", []string{name + `"v=STSv1; id=20160831085700Z;"`}, "20160831085700Z"},
		{"no spaces", []string{name + `"v=STSv1;id=abc"`}, "abc"},
		{"spaces and tabs around delimiters", []string{name + "\"v=STSv1 ;\tid=abc ; \""}, "abc"},
		{"extension fields ignored", []string{name + `"v=STSv1; foo=bar; id=abc; x-y.z=1"`}, "abc"},
		{"32-character id", []string{name + `"v=STSv1; id=abcdefghijklmnopqrstuvwxyz012345"`}, "abcdefghijklmnopqrstuvwxyz012345"},
		{"split into several strings", []string{name + `"v=STS" "v1; i" "d=ab" "c123"`}, "abc123"},
		{"other TXT records ignored", []string{name + `"v=spf1 -all"`, name + `"hello world"`, name + `"v=STSv1; id=abc"`}, "abc"},
		{"v=STSv10 is not v=STSv1", []string{name + `"v=STSv10; id=zzz"`, name + `"v=STSv1; id=abc"`}, "abc"},
		{"two v=STSv1 records", []string{name + `"v=STSv1; id=abc"`, name + `"v=STSv1; id=def"`}, ""},
		{"two v=STSv1 records, one invalid", []string{name + `"v=STSv1; id=abc"`, name + `"v=STSv1; id=!!"`}, ""},
		{"no TXT record", nil, ""},
		{"only other TXT records", []string{name + `"v=spf1 -all"`}, ""},
		{"lowercase version", []string{name + `"v=stsv1; id=abc"`}, ""},
		{"version not first", []string{name + `"id=abc; v=STSv1"`}, ""},
		{"no id", []string{name + `"v=STSv1;"`}, ""},
		{"version only", []string{name + `"v=STSv1"`}, ""},
		{"empty id", []string{name + `"v=STSv1; id="`}, ""},
		{"33-character id", []string{name + `"v=STSv1; id=abcdefghijklmnopqrstuvwxyz0123456"`}, ""},
		{"id with punctuation", []string{name + `"v=STSv1; id=abc-123"`}, ""},
		{"id with space", []string{name + `"v=STSv1; id=abc 123"`}, ""},
		{"duplicate id", []string{name + `"v=STSv1; id=abc; id=def"`}, ""},
		{"field without =", []string{name + `"v=STSv1; id=abc; junk"`}, ""},
		{"empty field in the middle", []string{name + `"v=STSv1;; id=abc"`}, ""},
		{"ID in capitals is not id", []string{name + `"v=STSv1; ID=abc"`}, ""},
		{"escaped quote in an extension value", []string{name + `"v=STSv1; id=abc; x=a\"b"`}, "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zone := testnet.NewZone(tt.records...)
			zone.Add("example.test. 300 IN MX 10 mx.example.test.")
			srv := testnet.StartDNS(t, zone)
			r := newResolver(t, srv)
			id, found, err := LookupID(context.Background(), r, "example.test")
			if err != nil {
				t.Fatalf("LookupID: %v", err)
			}
			if found != (tt.wantID != "") || id != tt.wantID {
				t.Errorf("LookupID = %q, %v; want %q, %v", id, found, tt.wantID, tt.wantID != "")
			}
		})
	}
}

func TestSTS01_TXTNames(t *testing.T) {
	zone := testnet.NewZone(`_mta-sts.example.test. 300 IN TXT "v=STSv1; id=abc"`)
	srv := testnet.StartDNS(t, zone)
	r := newResolver(t, srv)
	for _, d := range []string{"example.test", "Example.TEST.", " example.test "} {
		id, found, err := LookupID(context.Background(), r, d)
		if err != nil || !found || id != "abc" {
			t.Errorf("LookupID(%q) = %q, %v, %v", d, id, found, err)
		}
	}
	if n := srv.QueryCount("_mta-sts.example.test.", dns.TypeTXT); n == 0 {
		t.Error("no TXT query for _mta-sts.example.test")
	}
	if _, _, err := LookupID(context.Background(), r, "bad domain"); err == nil {
		t.Error("invalid domain accepted")
	}
}

func TestSTS01_TXTThroughCNAME(t *testing.T) {
	zone := testnet.NewZone(
		"_mta-sts.example.test. 300 IN CNAME _mta-sts.provider.test.",
		`_mta-sts.provider.test. 300 IN TXT "v=STSv1; id=viacname"`,
	)
	r := newResolver(t, testnet.StartDNS(t, zone))
	id, found, err := LookupID(context.Background(), r, "example.test")
	if err != nil || !found || id != "viacname" {
		t.Errorf("LookupID = %q, %v, %v", id, found, err)
	}
}

// A failed lookup is an error, never "no record" (STS01, STS09).
func TestSTS01_TXTLookupFailureIsError(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			zone := testnet.NewZone(`_mta-sts.example.test. 300 IN TXT "v=STSv1; id=abc"`)
			zone.Fail("_mta-sts.example.test.", dns.TypeTXT, rcode)
			r := newResolver(t, testnet.StartDNS(t, zone))
			id, found, err := LookupID(context.Background(), r, "example.test")
			if err == nil {
				t.Fatalf("LookupID = %q, %v, nil; want an error", id, found)
			}
			if found || !secpolicy.IsTemporary(err) {
				t.Errorf("found=%v, temporary=%v (%v)", found, secpolicy.IsTemporary(err), err)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		zone := testnet.NewZone(`_mta-sts.example.test. 300 IN TXT "v=STSv1; id=abc"`)
		zone.Drop("_mta-sts.example.test.", dns.TypeTXT)
		r := newResolver(t, testnet.StartDNS(t, zone))
		_, found, err := LookupID(context.Background(), r, "example.test")
		if err == nil || found {
			t.Fatalf("found=%v err=%v; want a timeout error", found, err)
		}
	})
	t.Run("NXDOMAIN is not an error", func(t *testing.T) {
		r := newResolver(t, testnet.StartDNS(t, testnet.NewZone("example.test. 300 IN A 127.0.0.1")))
		_, found, err := LookupID(context.Background(), r, "example.test")
		if err != nil || found {
			t.Fatalf("found=%v err=%v; want not found, no error", found, err)
		}
	})
}

func TestSTS01_ParseTXT(t *testing.T) {
	tests := []struct {
		rec  string
		want string // "" = invalid
	}{
		{"v=STSv1; id=abc", "abc"},
		{"v=STSv1;id=abc;", "abc"},
		{"v=STSv1; id=abc;  ", "abc"},
		{"v=STSv1; id=abc; ext=val", "abc"},
		{"v=STSv1; ext=val; id=abc", "abc"},
		{"v=STSv1; id=abc; ext=", ""},
		{"v=STSv1; id=abc; =val", ""},
		{"v=STSv1; id=abc; ext=a=b", ""},
		{"v=STSv1; id=abc; ext=a b", ""},
		{"v=STSv1; id=abc;;", ""},
		{"v=STSv1; id=ab\u00e9", ""},
		{"v=STSv1", ""},
		{"v=STSv1 id=abc", ""},
	}
	for _, tt := range tests {
		got, err := parseTXT(tt.rec)
		if tt.want == "" {
			if err == nil {
				t.Errorf("parseTXT(%q) = %q, want an error", tt.rec, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTXT(%q) = %q, %v; want %q", tt.rec, got, err, tt.want)
		}
	}
}
