package dsn

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzBuild feeds Build fuzzed strings in every field that comes from a
// client or a remote server (addresses, ENVID, ORCPT, diagnostics, status,
// the original message). Build must not panic; when it succeeds, every
// line it generated is CRLF-terminated and Parse reads the result back
// with one per-recipient block per recipient.
// Run with: go test -fuzz=FuzzBuild ./relay/dsn/
func FuzzBuild(f *testing.F) {
	f.Add("alice@example.org", "bob@example.com", "rfc822;bob@example.com", "failed", "5.1.1", "mx.example.com", "550 5.1.1 no such user", "env-1", "", "DANE: no match", origMsg, false)
	f.Add("alice@example.org", "bob@example.com", "", "delayed", "4.4.1", "", "", "", "HDRS", "", "Subject: x\r\n\r\nbody\r\n", false)
	f.Add("al\u00efce@exampl\u00e9.org", "b\u00f6b@example.com", "utf-8;b\u00f6b@example.com", "failed", "5.7.10", "mx", "550 5.7.10 REQUIRETLS\r\n550 more", "\u00e9", "FULL", "x", "Subject: \u00e9\r\n\r\n\u00e9\r\n", true)
	f.Add("a@b", "c@d", "c@d", "delivered", "2.0.0", "m", strings.Repeat("x", 2000), strings.Repeat("e", 100), "full", strings.Repeat("r ", 600), "no header end", false)
	f.Add("\r\n", "\x00", ";", "bogus", "9.9.9", "a b", "\n", "\r", "x", "\x7f", "\r\n\r\n", true)
	f.Fuzz(func(t *testing.T, to, rcpt, orcpt, action, status, remote, diag, envid, ret, reason, orig string, utf8 bool) {
		m := Message{
			ReportingMTA: "relay.example.com",
			To:           to,
			QueueID:      "4ZQ1x2",
			EnvID:        envid,
			ArrivalDate:  tArrival,
			Ret:          ret,
			SMTPUTF8:     utf8,
			Recipients: []Recipient{
				{Addr: rcpt, ORcpt: orcpt, Action: action, Status: status, RemoteMTA: remote, Diagnostic: diag, Reason: reason, LastAttempt: tLast, WillRetryUntil: tUntil},
				{Addr: "second@example.net", Action: ActionFailed, Status: "5.0.0", Reason: reason},
			},
			Date:      tDate,
			MessageID: "dsn.4ZQ1x2@relay.example.com",
		}
		if orig != "" {
			m.Original = strings.NewReader(orig)
		}
		out, err := Build(m)
		if err != nil {
			if out != nil {
				t.Fatalf("Build returned output and the error %v", err)
			}
			return
		}
		// The original is copied unchanged, so only what precedes it (up
		// to the end of the header of the third part, which carries it)
		// is Build's own text. Searching for the original itself can
		// match inside Build's text ("\n" does, in the first CRLF).
		own := out
		if orig != "" {
			own = upToOriginal(out)
		}
		for i, line := range bytes.Split(own, []byte("\r\n")) {
			if bytes.ContainsAny(line, "\r\n") {
				t.Fatalf("generated line %d has a bare CR or LF: %q", i+1, line)
			}
			if len(line) > 998 {
				t.Fatalf("generated line %d is %d octets long", i+1, len(line))
			}
		}
		rep, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse of Build's output: %v\n%s", err, out)
		}
		if len(rep.PerRecipient) != 2 {
			t.Fatalf("%d per-recipient blocks, want 2\n%s", len(rep.PerRecipient), out)
		}
	})
}

// upToOriginal returns a DSN up to the body of its third part (the
// original message), or all of it when it has no third part.
func upToOriginal(out []byte) []byte {
	const desc = "\r\nContent-Description: "
	at := 0
	for n := 0; n < 3; n++ {
		i := bytes.Index(out[at:], []byte(desc))
		if i < 0 {
			return out
		}
		at += i + len(desc)
	}
	end := bytes.Index(out[at:], []byte("\r\n\r\n"))
	if end < 0 {
		return out
	}
	return out[:at+end+4]
}
