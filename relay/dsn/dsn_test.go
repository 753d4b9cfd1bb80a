package dsn

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"
)

var (
	tArrival = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	tLast    = time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC)
	tUntil   = time.Date(2026, 3, 6, 10, 0, 0, 0, time.UTC)
	tDate    = time.Date(2026, 3, 1, 10, 6, 0, 0, time.FixedZone("", 3600))
)

const origMsg = "Received: from client.test\r\n\tby relay.example.com; Sun, 1 Mar 2026 10:00:00 +0000\r\n" +
	"From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: hello\r\n\r\n" +
	"body line 1\r\n\r\nbody line 3 after an empty line\r\n"

const origHeaders = "Received: from client.test\r\n\tby relay.example.com; Sun, 1 Mar 2026 10:00:00 +0000\r\n" +
	"From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: hello\r\n"

// base returns a valid message reporting rcpts.
func base(rcpts ...Recipient) Message {
	return Message{
		ReportingMTA: "relay.example.com",
		From:         "postmaster@relay.example.com",
		To:           "alice@example.org",
		QueueID:      "4ZQ1x2",
		ArrivalDate:  tArrival,
		Original:     strings.NewReader(origMsg),
		Recipients:   rcpts,
		Date:         tDate,
		MessageID:    "dsn.4ZQ1x2@relay.example.com",
	}
}

func failedRcpt(addr, status, mta, diag string) Recipient {
	return Recipient{Addr: addr, Action: ActionFailed, Status: status, RemoteMTA: mta, Diagnostic: diag, LastAttempt: tLast}
}

// build builds m, checks that the result is well-formed and parses it back.
func build(t *testing.T, m Message) ([]byte, *Report) {
	t.Helper()
	out, err := Build(m)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	checkWellFormed(t, out)
	rep, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, out)
	}
	return out, rep
}

// checkWellFormed checks CRLF line endings and line lengths, and walks the
// message with net/mail and mime/multipart only (independently of Parse).
func checkWellFormed(t *testing.T, out []byte) {
	t.Helper()
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		t.Errorf("output does not end in CRLF")
	}
	for i, line := range strings.Split(string(out), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 998 {
			t.Errorf("line %d is %d octets long (> 998)", i+1, len(line))
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("net/mail: %v", err)
	}
	for _, h := range []string{"Date", "From", "To", "Subject", "Message-Id", "Auto-Submitted", "Mime-Version", "Content-Type"} {
		if msg.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if _, err := msg.Header.AddressList("From"); err != nil {
		t.Errorf("From: %v", err)
	}
	if _, err := msg.Header.AddressList("To"); err != nil {
		t.Errorf("To: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	n := 0
	for ; ; n++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("mime/multipart: part %d: %v", n+1, err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("mime/multipart: part %d: %v", n+1, err)
		}
		if bytes.Contains(body, []byte(params["boundary"])) {
			t.Errorf("part %d contains the boundary", n+1)
		}
	}
	if n < 2 || n > 3 {
		t.Errorf("%d parts, want 2 or 3", n)
	}
}

func TestDSN01_GroupsFailedRecipients(t *testing.T) {
	tests := []struct {
		name  string
		rcpts []Recipient
	}{
		{"two recipients, two hosts", []Recipient{
			failedRcpt("bob@example.com", "5.1.1", "mx1.example.com", "550 5.1.1 <bob@example.com>: no such user"),
			failedRcpt("carol@example.net", "5.2.2", "mx.example.net", "552 5.2.2 mailbox full"),
		}},
		{"two recipients, same host", []Recipient{
			failedRcpt("bob@example.com", "5.1.1", "mx1.example.com", "550 5.1.1 no such user"),
			failedRcpt("dave@example.com", "5.7.1", "mx1.example.com", "554 5.7.1 rejected by policy"),
		}},
		{"three recipients, one never reached a server", []Recipient{
			failedRcpt("bob@example.com", "5.1.1", "mx1.example.com", "550 5.1.1 no such user"),
			failedRcpt("carol@example.net", "5.2.2", "mx.example.net", "552 5.2.2 mailbox full"),
			{Addr: "erin@null-mx.example", Action: ActionFailed, Status: "5.1.10", Reason: "recipient domain publishes a null MX (RFC 7505)"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rep := build(t, base(tc.rcpts...))
			if got := rep.Header.Get("Subject"); got != "Undelivered Mail Returned to Sender" {
				t.Errorf("Subject = %q", got)
			}
			if got := rep.Header.Get("Auto-Submitted"); got != "auto-replied" {
				t.Errorf("Auto-Submitted = %q", got)
			}
			if got := rep.Header.Get("To"); got != "<alice@example.org>" {
				t.Errorf("To = %q", got)
			}
			from, err := rep.Header.AddressList("From")
			if err != nil || len(from) != 1 || from[0].Name != "Mail Delivery System" || from[0].Address != "postmaster@relay.example.com" {
				t.Errorf("From = %v, %v", from, err)
			}
			if got := rep.Header.Get("Message-Id"); got != "<dsn.4ZQ1x2@relay.example.com>" {
				t.Errorf("Message-ID = %q", got)
			}
			if d, err := rep.Header.Date(); err != nil || !d.Equal(tDate) {
				t.Errorf("Date = %v, %v", d, err)
			}
			if got := rep.PerMessage.Get("Reporting-MTA"); got != "dns;relay.example.com" {
				t.Errorf("Reporting-MTA = %q", got)
			}
			if got := rep.PerMessage.Get("X-Queue-ID"); got != "4ZQ1x2" {
				t.Errorf("X-Queue-ID = %q", got)
			}
			if got := rep.PerMessage.Get("Arrival-Date"); got != tArrival.Format(rfc5322Date) {
				t.Errorf("Arrival-Date = %q", got)
			}
			if len(rep.PerRecipient) != len(tc.rcpts) {
				t.Fatalf("%d per-recipient blocks, want %d", len(rep.PerRecipient), len(tc.rcpts))
			}
			for i, r := range tc.rcpts {
				h := rep.PerRecipient[i]
				want := map[string]string{
					"Final-Recipient":   "rfc822;" + r.Addr,
					"Action":            "failed",
					"Status":            r.Status,
					"Remote-MTA":        "",
					"Diagnostic-Code":   "",
					"Last-Attempt-Date": "",
					"Will-Retry-Until":  "",
				}
				if r.RemoteMTA != "" {
					want["Remote-MTA"] = "dns;" + r.RemoteMTA
				}
				if r.Diagnostic != "" {
					want["Diagnostic-Code"] = "smtp; " + r.Diagnostic
				} else {
					want["Diagnostic-Code"] = "X-Relay; " + r.Reason
				}
				if !r.LastAttempt.IsZero() {
					want["Last-Attempt-Date"] = r.LastAttempt.Format(rfc5322Date)
				}
				for k, v := range want {
					if got := h.Get(k); got != v {
						t.Errorf("recipient %d: %s = %q, want %q", i, k, got, v)
					}
				}
				if !strings.Contains(rep.Human, "<"+r.Addr+">") {
					t.Errorf("human part does not name %s", r.Addr)
				}
			}
		})
	}
}

func TestDSN02_NoDSNToNullSender(t *testing.T) {
	ok := failedRcpt("bob@example.com", "5.1.1", "mx.example.com", "550 5.1.1 no such user")
	tests := []struct {
		name   string
		modify func(*Message)
		want   error
	}{
		{"null sender", func(m *Message) { m.To = "" }, ErrNullSender},
		{"blank sender", func(m *Message) { m.To = "  " }, ErrNullSender},
		{"no recipients", func(m *Message) { m.Recipients = nil }, ErrNoRecipients},
		{"unknown action", func(m *Message) { m.Recipients[0].Action = "bounced" }, ErrInvalid},
		{"empty action", func(m *Message) { m.Recipients[0].Action = "" }, ErrInvalid},
		{"malformed status", func(m *Message) { m.Recipients[0].Status = "550" }, ErrInvalid},
		{"status class 3", func(m *Message) { m.Recipients[0].Status = "3.1.1" }, ErrInvalid},
		{"no recipient address", func(m *Message) { m.Recipients[0].Addr = "" }, ErrInvalid},
		{"bad RET", func(m *Message) { m.Ret = "ALL" }, ErrInvalid},
		{"no reporting MTA", func(m *Message) { m.ReportingMTA = "" }, ErrInvalid},
		{"header injection in To", func(m *Message) { m.To = "alice@example.org\r\nBcc: eve@example.net" }, ErrInvalid},
		{"unparsable To", func(m *Message) { m.To = "not an address" }, ErrInvalid},
		{"bad Message-ID", func(m *Message) { m.MessageID = "no at sign" }, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base(ok)
			tc.modify(&m)
			out, err := Build(m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Build error = %v, want %v", err, tc.want)
			}
			if out != nil {
				t.Errorf("Build returned a message along with an error")
			}
		})
	}
}

func TestDSN03_EnvIDAndORcptEchoed(t *testing.T) {
	tests := []struct {
		name, envID, orcpt      string
		wantEnvID, wantOrigRcpt string
	}{
		{"ORCPT and ENVID", "QQ314159", "rfc822;orig@example.com", "QQ314159", "rfc822;orig@example.com"},
		{"type case kept", "a.b-c_1", "RFC822;b@example.com", "a.b-c_1", "RFC822;b@example.com"},
		{"bare ORCPT is rfc822", "", "orig@example.com", "", "rfc822;orig@example.com"},
		{"neither", "", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := failedRcpt("bob@example.com", "5.1.1", "mx.example.com", "550 5.1.1 no such user")
			r.ORcpt = tc.orcpt
			m := base(r)
			m.EnvID = tc.envID
			_, rep := build(t, m)
			if got := rep.PerMessage.Get("Original-Envelope-Id"); got != tc.wantEnvID {
				t.Errorf("Original-Envelope-Id = %q, want %q", got, tc.wantEnvID)
			}
			if _, present := rep.PerMessage["Original-Envelope-Id"]; present != (tc.wantEnvID != "") {
				t.Errorf("Original-Envelope-Id present = %v", present)
			}
			h := rep.PerRecipient[0]
			if got := h.Get("Original-Recipient"); got != tc.wantOrigRcpt {
				t.Errorf("Original-Recipient = %q, want %q", got, tc.wantOrigRcpt)
			}
			if _, present := h["Original-Recipient"]; present != (tc.wantOrigRcpt != "") {
				t.Errorf("Original-Recipient present = %v (RFC 3464 §2.3.1: only if ORCPT given)", present)
			}
		})
	}
}

func TestDSN03_RetControlsReturnedContent(t *testing.T) {
	big := "Subject: big\r\nFrom: <alice@example.org>\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 20000) // ~1.5 MiB
	bin := "Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n8bit \xe2\x82\xac body, no final CRLF"
	failed := failedRcpt("bob@example.com", "5.1.1", "mx.example.com", "550 5.1.1 no such user")
	delayed := Recipient{Addr: "bob@example.com", Action: ActionDelayed, Status: "4.4.1", WillRetryUntil: tUntil}
	tests := []struct {
		name      string
		ret       string
		limit     int64
		orig      string
		rcpt      Recipient
		wantType  string
		want      string
		wantCTE8  bool
		wantParts int
	}{
		{"HDRS: headers only", "HDRS", 0, origMsg, failed, "text/rfc822-headers", origHeaders, false, 3},
		{"hdrs is case-insensitive", "hdrs", 0, origMsg, failed, "text/rfc822-headers", origHeaders, false, 3},
		{"FULL: byte for byte", "FULL", 0, origMsg, failed, "message/rfc822", origMsg, false, 3},
		{"FULL: big original still whole", "FULL", 0, big, failed, "message/rfc822", big, false, 3},
		{"FULL: 8bit, no final CRLF", "FULL", 0, bin, failed, "message/rfc822", bin, true, 3},
		{"unset, small: whole", "", 0, origMsg, failed, "message/rfc822", origMsg, false, 3},
		{"unset, bigger than 1 MiB: headers", "", 0, big, failed, "text/rfc822-headers", "Subject: big\r\nFrom: <alice@example.org>\r\n", false, 3},
		{"unset, over FullLimit: headers", "", 64, origMsg, failed, "text/rfc822-headers", origHeaders, false, 3},
		{"unset, at FullLimit: whole", "", int64(len(origMsg)), origMsg, failed, "message/rfc822", origMsg, false, 3},
		{"headers without body", "FULL", 0, "Subject: x\r\n", failed, "message/rfc822", "Subject: x\r\n", false, 3},
		{"delay warning: headers even with FULL", "FULL", 0, origMsg, delayed, "text/rfc822-headers", origHeaders, false, 3},
		{"no original: two parts", "FULL", 0, "", failed, "", "", false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base(tc.rcpt)
			m.Ret, m.FullLimit = tc.ret, tc.limit
			m.Original = strings.NewReader(tc.orig)
			if tc.wantParts == 2 {
				m.Original = nil
			}
			out, rep := build(t, m)
			if rep.OriginalType != tc.wantType {
				t.Errorf("third part type = %q, want %q", rep.OriginalType, tc.wantType)
			}
			if string(rep.Original) != tc.want {
				t.Errorf("third part differs: got %d bytes, want %d\n got %.200q\nwant %.200q", len(rep.Original), len(tc.want), rep.Original, tc.want)
			}
			if got := strings.Count(string(out), "\r\nContent-Description: "); got != tc.wantParts {
				t.Errorf("%d parts, want %d", got, tc.wantParts)
			}
			if got := rep.Header.Get("Content-Transfer-Encoding") == "8bit"; got != tc.wantCTE8 {
				t.Errorf("top-level 8bit = %v, want %v", got, tc.wantCTE8)
			}
		})
	}
}

func TestDSN04_DiagnosticAndPolicyReason(t *testing.T) {
	const dane = "DANE: TLSA 3 1 1 matched no certificate in the chain"
	longReply := "550-5.7.1 " + strings.Repeat("this is a very long multi-line rejection text ", 40)
	tests := []struct {
		name       string
		rcpt       Recipient
		wantDiag   string
		wantHuman  []string
		notInField []string
	}{
		{
			name:      "policy failure without remote reply",
			rcpt:      Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.7.5", RemoteMTA: "mx.example.com", Reason: dane},
			wantDiag:  "X-Relay; " + dane,
			wantHuman: []string{dane, "mx.example.com", "5.7.5"},
		},
		{
			name:      "remote reply and reason",
			rcpt:      Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.1.1", RemoteMTA: "mx.example.com", Diagnostic: "550 5.1.1 no such user", Reason: "MTA-STS policy enforce: mx.example.com matched"},
			wantDiag:  "smtp; 550 5.1.1 no such user",
			wantHuman: []string{"550 5.1.1 no such user", "MTA-STS policy enforce: mx.example.com matched"},
		},
		{
			name:       "multi-line reply: CRLF collapsed",
			rcpt:       Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.1.1", RemoteMTA: "mx.example.com", Diagnostic: "550-5.1.1 The email account does not exist.\r\n550 5.1.1 Please try again.\r\n"},
			wantDiag:   "smtp; 550-5.1.1 The email account does not exist. 550 5.1.1 Please try again.",
			wantHuman:  []string{"550-5.1.1 The email account does not exist."},
			notInField: []string{"\r", "\n"},
		},
		{
			name:      "header injection in the remote reply stays in the value",
			rcpt:      Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.0.0", RemoteMTA: "mx.example.com", Diagnostic: "550 no\r\nFinal-Recipient: rfc822;eve@example.net\n\nAction: delivered"},
			wantDiag:  "smtp; 550 no Final-Recipient: rfc822;eve@example.net Action: delivered",
			wantHuman: []string{"550 no Final-Recipient"},
		},
		{
			name:      "long reply folded, unfolds exactly",
			rcpt:      Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.7.1", RemoteMTA: "mx.example.com", Diagnostic: longReply},
			wantDiag:  "smtp; " + strings.TrimSpace(longReply),
			wantHuman: []string{"550-5.7.1 this is a very long"},
		},
		{
			name:      "controls and tabs become spaces",
			rcpt:      Recipient{Addr: "bob@example.com", Action: ActionFailed, Status: "5.0.0", Diagnostic: "554\t5.0.0\x00 bad\x1b[0m  thing", Reason: "x\ry"},
			wantDiag:  "smtp; 554 5.0.0 bad [0m thing",
			wantHuman: []string{"Reason: x y"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, rep := build(t, base(tc.rcpt))
			if len(rep.PerRecipient) != 1 {
				t.Fatalf("%d per-recipient blocks, want 1", len(rep.PerRecipient))
			}
			h := rep.PerRecipient[0]
			if got := h.Get("Diagnostic-Code"); got != tc.wantDiag {
				t.Errorf("Diagnostic-Code = %q\nwant %q", got, tc.wantDiag)
			}
			if got := h.Get("Final-Recipient"); got != "rfc822;bob@example.com" {
				t.Errorf("Final-Recipient = %q", got)
			}
			if len(h["Final-Recipient"]) != 1 || len(h["Action"]) != 1 {
				t.Errorf("fields duplicated: %v", h)
			}
			if got := h.Get("Status"); got != tc.rcpt.Status {
				t.Errorf("Status = %q", got)
			}
			for _, s := range tc.wantHuman {
				if !strings.Contains(unwrap(rep.Human), s) {
					t.Errorf("human part lacks %q:\n%s", s, rep.Human)
				}
			}
			if tc.rcpt.Reason != "" && !strings.Contains(rep.Human, "Reason: ") {
				t.Errorf("human part lacks the reason")
			}
			for _, s := range tc.notInField {
				if strings.Contains(h.Get("Diagnostic-Code"), s) {
					t.Errorf("Diagnostic-Code contains %q", s)
				}
			}
			if bytes.Contains(out, []byte("\r\nFinal-Recipient: rfc822;eve")) || bytes.Contains(out, []byte("\r\nAction: delivered")) {
				t.Errorf("remote reply injected a field")
			}
		})
	}
}

// unwrap undoes the line wrapping of the human-readable part.
func unwrap(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func TestDSN05_DelayedReport(t *testing.T) {
	tests := []struct {
		name        string
		rcpts       []Recipient
		wantSubject string
		wantRetry   []string // per recipient; "" means absent
	}{
		{
			name:        "delay warning",
			rcpts:       []Recipient{{Addr: "bob@example.com", Action: ActionDelayed, Status: "4.4.1", RemoteMTA: "mx.example.com", Diagnostic: "421 4.4.1 try later", LastAttempt: tLast, WillRetryUntil: tUntil}},
			wantSubject: "Delayed Mail (still being retried)",
			wantRetry:   []string{tUntil.Format(rfc5322Date)},
		},
		{
			name: "delayed without end date",
			rcpts: []Recipient{{Addr: "bob@example.com", Action: "DELAYED", Status: "4.4.7",
				Reason: "no MX host reachable"}},
			wantSubject: "Delayed Mail (still being retried)",
			wantRetry:   []string{""},
		},
		{
			name: "failed and delayed together: failure subject, retry only for delayed",
			rcpts: []Recipient{
				{Addr: "bob@example.com", Action: ActionFailed, Status: "5.1.1", Diagnostic: "550 5.1.1 no", WillRetryUntil: tUntil},
				{Addr: "carol@example.com", Action: ActionDelayed, Status: "4.2.0", WillRetryUntil: tUntil},
			},
			wantSubject: "Undelivered Mail Returned to Sender",
			wantRetry:   []string{"", tUntil.Format(rfc5322Date)},
		},
		{
			name:        "success report",
			rcpts:       []Recipient{{Addr: "bob@example.com", Action: ActionDelivered, Status: "2.0.0", RemoteMTA: "mx.example.com", Diagnostic: "250 2.0.0 OK queued as 123"}},
			wantSubject: "Successful Mail Delivery Report",
			wantRetry:   []string{""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rep := build(t, base(tc.rcpts...))
			if got := rep.Header.Get("Subject"); got != tc.wantSubject {
				t.Errorf("Subject = %q, want %q", got, tc.wantSubject)
			}
			for i, r := range tc.rcpts {
				h := rep.PerRecipient[i]
				if got := h.Get("Action"); got != strings.ToLower(r.Action) {
					t.Errorf("recipient %d: Action = %q", i, got)
				}
				if got := h.Get("Will-Retry-Until"); got != tc.wantRetry[i] {
					t.Errorf("recipient %d: Will-Retry-Until = %q, want %q", i, got, tc.wantRetry[i])
				}
				if tc.wantRetry[i] != "" && !strings.Contains(rep.Human, "Will retry until: "+tc.wantRetry[i]) {
					t.Errorf("human part does not say until when retries go on:\n%s", rep.Human)
				}
			}
		})
	}
}

func TestSMTPUTF8_GlobalDeliveryStatus(t *testing.T) {
	const uOrig = "From: <jöran@bücher.example>\r\nSubject: grüße\r\n\r\nhallo\r\n"
	tests := []struct {
		name       string
		smtputf8   bool
		ret        string
		addr       string
		wantStatus string
		wantOrig   string
		wantFinal  string
	}{
		{"global, FULL", true, "FULL", "zoë@bücher.example", "message/global-delivery-status", "message/global", "utf-8;zoë@bücher.example"},
		{"global, HDRS", true, "HDRS", "zoë@bücher.example", "message/global-delivery-status", "message/global-headers", "utf-8;zoë@bücher.example"},
		{"global, ASCII recipient", true, "FULL", "bob@example.com", "message/global-delivery-status", "message/global", "rfc822;bob@example.com"},
		{"plain, non-ASCII recipient encoded", false, "HDRS", "zoë+x@bücher.example", "message/delivery-status", "text/rfc822-headers", `utf-8;zo\x{EB}\x{2B}x@b\x{FC}cher.example`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base(Recipient{Addr: tc.addr, Action: ActionFailed, Status: "5.1.1", RemoteMTA: "mx.bücher.example",
				Diagnostic: "550 5.1.1 unbekannter Empfänger", Reason: "Zustellung gescheitert – endgültig"})
			m.SMTPUTF8, m.Ret = tc.smtputf8, tc.ret
			m.To = "jöran@bücher.example"
			m.Original = strings.NewReader(uOrig)
			out, rep := build(t, m)
			if !bytes.Contains(out, []byte("\r\nContent-Type: "+tc.wantStatus+"\r\n")) {
				t.Errorf("no %s part", tc.wantStatus)
			}
			if rep.OriginalType != tc.wantOrig {
				t.Errorf("third part = %q, want %q", rep.OriginalType, tc.wantOrig)
			}
			h := rep.PerRecipient[0]
			if got := h.Get("Final-Recipient"); got != tc.wantFinal {
				t.Errorf("Final-Recipient = %q, want %q", got, tc.wantFinal)
			}
			if !strings.Contains(rep.Human, "unbekannter Empfänger") || !strings.Contains(rep.Human, "endgültig") {
				t.Errorf("human part lost UTF-8 text:\n%s", rep.Human)
			}
			if !tc.smtputf8 {
				// message/delivery-status is US-ASCII.
				i := bytes.Index(out, []byte("Content-Type: message/delivery-status"))
				j := bytes.Index(out[i:], []byte("\r\n--="))
				if !isASCII(out[i : i+j]) {
					t.Errorf("message/delivery-status part is not ASCII:\n%s", out[i:i+j])
				}
				if got := h.Get("Diagnostic-Code"); got != `smtp; 550 5.1.1 unbekannter Empf\x{E4}nger` {
					t.Errorf("Diagnostic-Code = %q", got)
				}
			} else if got := h.Get("Diagnostic-Code"); got != "smtp; 550 5.1.1 unbekannter Empfänger" {
				t.Errorf("Diagnostic-Code = %q", got)
			}
		})
	}
}

func TestWellFormedOutput(t *testing.T) {
	huge := strings.Repeat("A", 2500) // one 2500-octet word
	tests := []struct {
		name string
		m    Message
	}{
		{"defaults: no From, no Date, no Message-ID", Message{ReportingMTA: "relay.example.com", To: "a@example.org",
			Recipients: []Recipient{{Addr: "b@example.com", Action: ActionFailed, Status: "5.0.0"}}}},
		{"quoted local part sender", Message{ReportingMTA: "relay.example.com", To: `"john doe"@example.org`,
			Recipients: []Recipient{{Addr: "b@example.com", Action: ActionExpanded, Status: "2.0.0"}}}},
		{"very long words everywhere", Message{ReportingMTA: "relay.example.com", To: "a@example.org", QueueID: huge, EnvID: huge,
			Original: strings.NewReader(origMsg),
			Recipients: []Recipient{{Addr: "b@example.com", ORcpt: "rfc822;" + huge, Action: ActionFailed, Status: "5.0.0",
				RemoteMTA: huge, Diagnostic: "550 " + huge + " " + huge, Reason: huge}}}},
		{"many recipients", func() Message {
			m := base()
			for i := 0; i < 200; i++ {
				m.Recipients = append(m.Recipients, failedRcpt("user"+strings.Repeat("x", i%50)+"@example.com", "5.1.1", "mx.example.com", "550 5.1.1 no"))
			}
			return m
		}()},
		{"relayed and delivered", base(
			Recipient{Addr: "b@example.com", Action: ActionRelayed, Status: "2.0.0", RemoteMTA: "mx.example.com"},
			Recipient{Addr: "c@example.com", Action: ActionDelivered, Status: "2.0.0", RemoteMTA: "mx.example.com"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rep := build(t, tc.m)
			if len(rep.PerRecipient) != len(tc.m.Recipients) {
				t.Errorf("%d per-recipient blocks, want %d", len(rep.PerRecipient), len(tc.m.Recipients))
			}
			if tc.m.From == "" {
				from, _ := rep.Header.AddressList("From")
				if len(from) != 1 || from[0].Address != "postmaster@"+tc.m.ReportingMTA {
					t.Errorf("default From = %v", from)
				}
			}
			if tc.m.MessageID == "" && !strings.HasSuffix(rep.Header.Get("Message-Id"), "@"+tc.m.ReportingMTA+">") {
				t.Errorf("generated Message-ID = %q", rep.Header.Get("Message-Id"))
			}
		})
	}
}

func TestBoundaryIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		out, err := Build(base(failedRcpt("b@example.com", "5.1.1", "", "")))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := mail.ReadMessage(bytes.NewReader(out))
		_, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if seen[params["boundary"]] {
			t.Fatalf("boundary %q repeated", params["boundary"])
		}
		seen[params["boundary"]] = true
	}
}

func TestParseRejectsNonReports(t *testing.T) {
	tests := []struct{ name, msg string }{
		{"plain text", "Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n"},
		{"no boundary", "Content-Type: multipart/report; report-type=delivery-status\r\n\r\n"},
		{"no status part", "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"},
		{"no per-recipient fields", "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;x\r\n--b--\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.msg)); err == nil {
				t.Errorf("Parse accepted it")
			}
		})
	}
}
