package inbound

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/relaysec/relay/internal/testnet"
)

func TestSRV04_DNSRecords(t *testing.T) {
	id := PolicyID(mustRender(t, examplePolicy))
	recs := DNSRecords("Example.ORG.", examplePolicy, "https://mta-sts.example.org/report/tlsrpt", nil)
	want := []Record{
		{Name: "_mta-sts.example.org.", Type: "TXT", Value: `"v=STSv1; id=` + id + `"`},
		{Name: "mta-sts.example.org.", Type: "CNAME", Value: ""},
		{Name: "_smtp._tls.example.org.", Type: "TXT", Value: `"v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		g := recs[i]
		if g.Name != w.Name || g.Type != w.Type || g.Value != w.Value {
			t.Errorf("record %d = %s %s %s, want %s %s %s", i, g.Name, g.Type, g.Value, w.Name, w.Type, w.Value)
		}
		if g.Note == "" {
			t.Errorf("record %d (%s) has no note", i, g.Name)
		}
	}
	if !strings.Contains(recs[1].Note, "A/AAAA") || !strings.Contains(recs[1].Note, "certificate valid for mta-sts.example.org") {
		t.Errorf("mta-sts advice %q should mention A/AAAA and the certificate", recs[1].Note)
	}

	// The id follows the policy.
	changed := examplePolicy
	changed.Mode = ModeTesting
	if DNSRecords("example.org", changed, "", nil)[0].Value == recs[0].Value {
		t.Error("changing the policy did not change the _mta-sts record")
	}
}

func TestRPT07_TLSRPTRecord(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want string // "" means no record
	}{
		{"https://mta-sts.example.org/report/tlsrpt", `"v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`},
		{"https://relay.example.com/r", `"v=TLSRPTv1; rua=https://relay.example.com/r"`},
		{"", ""},
	} {
		var got string
		for _, r := range DNSRecords("example.org", examplePolicy, tt.url, nil) {
			if r.Name == "_smtp._tls.example.org." {
				if r.Type != "TXT" {
					t.Errorf("type %s", r.Type)
				}
				got = r.Value
			}
		}
		if got != tt.want {
			t.Errorf("report URL %q: _smtp._tls record %q, want %q", tt.url, got, tt.want)
		}
		if got != "" {
			if _, err := parseRUA(mustTagList(t, strings.Trim(got, `"`))["rua"]); err != nil {
				t.Errorf("the printed record does not pass Check's parser: %v", err)
			}
		}
	}
}

func mustTagList(t *testing.T, s string) map[string]string {
	t.Helper()
	m, err := parseTagList(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDNSRecordsTLSA(t *testing.T) {
	ca := testnet.NewCA(t)
	tests := []struct {
		name  string
		names []string
		want  []string // TLSA owner names
	}{
		{"certificate of a policy MX host", []string{"mail.example.org", "relay.example.com"}, []string{"_25._tcp.mail.example.org."}},
		{"certificate of another host", []string{"relay.example.com", "*.example.com"}, []string{"_25._tcp.relay.example.com."}},
		{"wildcard MX patterns are not owners", []string{"a.mx.example.org"}, []string{"_25._tcp.a.mx.example.org."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := ca.Issue(tt.names...).Leaf
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			var got []string
			for _, r := range DNSRecords("example.org", examplePolicy, "", cert) {
				if r.Type != "TLSA" {
					continue
				}
				got = append(got, r.Name)
				if want := "3 1 1 " + hex.EncodeToString(sum[:]); r.Value != want {
					t.Errorf("TLSA value %q, want %q", r.Value, want)
				}
				if !strings.Contains(r.Note, "MX host") || !strings.Contains(r.Note, "DNSSEC") {
					t.Errorf("TLSA note %q should say it is for the MX host and needs DNSSEC", r.Note)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("TLSA owners %v, want %v", got, tt.want)
			}
		})
	}
}
