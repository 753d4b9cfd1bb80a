package intake

import (
	"bufio"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relaysec/relay/queue"
)

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9]([ -]|$)`)

// FuzzCommandArgs sends fuzzed MAIL FROM and RCPT TO arguments (addresses
// and ESMTP parameters: SIZE, BODY, SMTPUTF8, REQUIRETLS, RET, ENVID,
// NOTIFY, ORCPT...) to a live intake session on loopback, through
// go-smtp's parsing into the Mail and Rcpt hooks. The server must not
// panic, must answer every command with a well-formed reply, and must
// still answer the NOOP that follows.
// Run with: go test -fuzz=FuzzCommandArgs ./relay/intake/
func FuzzCommandArgs(f *testing.F) {
	seeds := [][2]string{
		{"<a@example.org>", "<b@example.com>"},
		{"<a@example.org> SIZE=100 BODY=8BITMIME SMTPUTF8", "<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.com"},
		{"<> RET=HDRS ENVID=QQ+2B+3D", "<b@[127.0.0.1]> NOTIFY=NEVER"},
		{"<a@example.org> REQUIRETLS", "<\u00e9@\u00e9.example>"},
		{"<a@example.org> AUTH=<>", "<b@example.com> ORCPT=utf-8;\\x{E9}@x"},
		{"<a@example.org> SIZE=99999999999999999999", "<b@example.com> NOTIFY="},
		{"a@example.org", "b@example.com"},
		{"<", ">"},
		{"<@relay:a@example.org>", "<\"quoted local\"@example.com>"},
		{"<a@example.org> ENVID=" + strings.Repeat("x", 200), "<b@example.com> ORCPT=rfc822;" + strings.Repeat("y", 600)},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	q, err := queue.Open(f.TempDir(), queue.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer q.Close()
	r := serveIntake(f, q, func(o *Options) {
		o.MaxConnectionsPerIP = 0
		o.MaxConnections = 0
		o.CommandTimeout = 5 * time.Second
	})
	clean := func(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

	f.Fuzz(func(t *testing.T, from, to string) {
		conn, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		reply := func(what string) string {
			t.Helper()
			var code string
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("%s: reading the reply: %v (so far %q)", what, err, line)
				}
				line = strings.TrimRight(line, "\r\n")
				if !replyLine.MatchString(line) {
					t.Fatalf("%s: malformed reply line %q", what, line)
				}
				if code != "" && line[:3] != code {
					t.Fatalf("%s: reply code changed within a multi-line reply: %q", what, line)
				}
				code = line[:3]
				if len(line) == 3 || line[3] == ' ' {
					return code
				}
			}
		}
		cmd := func(c string) string {
			t.Helper()
			if _, err := conn.Write([]byte(c + "\r\n")); err != nil {
				t.Fatalf("%q: %v", c, err)
			}
			return reply(c)
		}
		if c := reply("greeting"); c != "220" {
			t.Fatalf("greeting %s", c)
		}
		if c := cmd("EHLO client.test"); c != "250" {
			t.Fatalf("EHLO: %s", c)
		}
		mailLine := "MAIL FROM:" + clean(from)
		rcptLine := "RCPT TO:" + clean(to)
		if len(mailLine) > 1000 || len(rcptLine) > 1000 {
			return // over the line limit of RFC 5321 §4.5.3.1.4; go-smtp's own matter
		}
		cmd(mailLine)
		cmd(rcptLine)
		if c := cmd("NOOP"); c != "250" {
			t.Fatalf("NOOP after MAIL %q RCPT %q: %s", from, to, c)
		}
		cmd("RSET")
		cmd("QUIT")
	})
}
