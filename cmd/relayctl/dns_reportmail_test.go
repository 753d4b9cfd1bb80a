package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestRPT08_DNSRecordsMailto: with [inbound.report_smtp], `dns records`
// offers the mailto: form of the _smtp._tls record next to https, and an
// MX record for the report mailbox's domain; a mailbox in the policy
// domain itself gets a warning instead of an MX that would take the
// domain's mail.
func TestRPT08_DNSRecordsMailto(t *testing.T) {
	withMailbox := func(address, mailbox string) string {
		path := dnsConfig(t, "127.0.0.1:9", "", "")
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString("[inbound.report_smtp]\naddress = \"" + address + "\"\naddresses = [\"" + mailbox + "\", \"second@reports.example.org\"]\n"); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name, address, mailbox string
		want, notWant          []string
		wantStderr             string
	}{
		{
			name: "subdomain mailbox on port 25", address: "127.0.0.1:25", mailbox: "TLSRPT@reports.example.org",
			want: []string{
				"Report mailbox: mailto:TLSRPT@reports.example.org",
				`_smtp._tls.example.org. 3600 TXT "v=TLSRPTv1; rua=mailto:TLSRPT@reports.example.org,https://mta-sts.example.org/report/tlsrpt"`,
				"reports.example.org. 3600 MX 10 relay.example.com.",
				"must reach this relay's [inbound.report_smtp] listener, which senders connect to on port 25 (the MX shown",
			},
			notWant: []string{"forward port 25", "second@"},
		},
		{
			name: "listener on another port", address: "127.0.0.1:2526", mailbox: "tlsrpt@reports.example.org",
			want: []string{"reports.example.org. 3600 MX 10 relay.example.com.", "(it listens on 127.0.0.1:2526: forward port 25 to it)"},
		},
		{
			name: "mailbox in the policy domain", address: "127.0.0.1:25", mailbox: "tlsrpt@example.org",
			want:       []string{`rua=mailto:tlsrpt@example.org,https://`},
			notWant:    []string{" MX "},
			wantStderr: "warning: the report mailbox tlsrpt@example.org is in example.org itself",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := withMailbox(tt.address, tt.mailbox)
			stdout, stderr, code := runCmd(t, "", "--config", cfg, "dns", "records", "example.org")
			mustSucceed(t, stdout, stderr, code)
			for _, w := range tt.want {
				if !strings.Contains(squash(stdout), squash(w)) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("output has %q:\n%s", w, stdout)
				}
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr, tt.wantStderr)
			}
			stdout, _, _ = runCmd(t, "", "--config", cfg, "--json", "dns", "records", "example.org")
			var out dnsRecordsOutput
			if err := json.Unmarshal([]byte(stdout), &out); err != nil || out.ReportMailto != "mailto:"+tt.mailbox {
				t.Errorf("JSON %v %+v", err, out)
			}
		})
	}
}
