package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name, in string
		want     *Reply
		wantErr  error
	}{
		{name: "single", in: "250 ok\r\n", want: &Reply{Code: 250, Lines: []string{"ok"}}},
		{name: "code only", in: "250\r\n", want: &Reply{Code: 250, Lines: []string{""}}},
		{name: "bare LF", in: "250 ok\n", want: &Reply{Code: 250, Lines: []string{"ok"}}},
		{name: "enhanced", in: "550 5.1.1 no such user\r\n", want: &Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"no such user"}}},
		{name: "enhanced only", in: "250 2.0.0\r\n", want: &Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{""}}},
		{name: "enhanced three-digit parts", in: "550 5.123.456 x\r\n", want: &Reply{Code: 550, Enhanced: "5.123.456", Lines: []string{"x"}}},
		{name: "class mismatch is text", in: "550 4.2.2 full\r\n", want: &Reply{Code: 550, Lines: []string{"4.2.2 full"}}},
		{name: "not enhanced: version", in: "220 5.0 server\r\n", want: &Reply{Code: 220, Lines: []string{"5.0 server"}}},
		{name: "not enhanced: four digits", in: "550 5.1234.1 x\r\n", want: &Reply{Code: 550, Lines: []string{"5.1234.1 x"}}},
		{name: "not enhanced: no space", in: "550 5.1.1x\r\n", want: &Reply{Code: 550, Lines: []string{"5.1.1x"}}},
		{
			name: "multi-line",
			in:   "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
			want: &Reply{Code: 250, Lines: []string{"mx.test", "PIPELINING", "SIZE 100"}},
		},
		{
			name: "multi-line enhanced",
			in:   "451-4.3.0 first\r\n451-second\r\n451 4.3.0 third\r\n",
			want: &Reply{Code: 451, Enhanced: "4.3.0", Lines: []string{"first", "second", "third"}},
		},
		{name: "code change", in: "250-a\r\n251 b\r\n", wantErr: ErrProtocol},
		{name: "short", in: "25\r\n", wantErr: ErrProtocol},
		{name: "bad separator", in: "250_ok\r\n", wantErr: ErrProtocol},
		{name: "bad code", in: "abc ok\r\n", wantErr: ErrProtocol},
		{name: "1xx", in: "150 ok\r\n", wantErr: ErrProtocol},
		{name: "truncated", in: "250-a\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "empty", in: "", wantErr: io.ErrUnexpectedEOF},
		{name: "line too long", in: "250 " + strings.Repeat("x", maxReplyLine) + "\r\n", wantErr: ErrProtocol},
		{name: "too many lines", in: strings.Repeat("250-x\r\n", maxReplyLines) + "250 x\r\n", wantErr: ErrProtocol},
		{name: "at line limits", in: strings.Repeat("250-x\r\n", maxReplyLines-1) + "250 " + strings.Repeat("y", maxReplyLine-6) + "\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readReply(bufio.NewReaderSize(strings.NewReader(tc.in), maxReplyLine))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("readReply = %+v, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readReply: %v", err)
			}
			if tc.want == nil {
				return
			}
			if got.Code != tc.want.Code || got.Enhanced != tc.want.Enhanced || strings.Join(got.Lines, "|") != strings.Join(tc.want.Lines, "|") || len(got.Lines) != len(tc.want.Lines) {
				t.Errorf("readReply = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReplyError(t *testing.T) {
	tests := []struct {
		r    Reply
		want string
	}{
		{Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"no such user"}}, "550 5.1.1 no such user"},
		{Reply{Code: 451, Lines: []string{"a", "b"}}, "451 a; b"},
		{Reply{Code: 250, Lines: []string{""}}, "250"},
		{Reply{Code: 250, Enhanced: "2.0.0"}, "250 2.0.0"},
	}
	for _, tc := range tests {
		if got := tc.r.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	for code, want := range map[int][3]bool{250: {true, false, false}, 354: {false, false, false}, 451: {false, true, false}, 554: {false, false, true}} {
		r := &Reply{Code: code}
		if got := [3]bool{r.Positive(), r.Temporary(), r.Permanent()}; got != want {
			t.Errorf("%d: Positive/Temporary/Permanent = %v, want %v", code, got, want)
		}
	}
}

func TestDotWriter(t *testing.T) {
	tests := []struct{ in, wire string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"..x\r\n.y\r\n", "...x\r\n..y\r\n.\r\n"},
		{"a.b\r\n", "a.b\r\n.\r\n"},
		{"\r\n.\r\n", "\r\n..\r\n.\r\n"},
		{"a\nb", "a\r\nb\r\n.\r\n"},
		{"a\rb", "a\r\nb\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{"a\r\r\n", "a\r\n\r\n.\r\n"},
		{"a\n.\n", "a\r\n..\r\n.\r\n"},
		{"a\r.\r", "a\r\n..\r\n.\r\n"},
		{"\n\n", "\r\n\r\n.\r\n"},
		{"\xff\x00\xe9\r\n", "\xff\x00\xe9\r\n.\r\n"},
	}
	for _, tc := range tests {
		// Every split point, so that state carried between writes is tested.
		for split := 0; split <= len(tc.in); split++ {
			var buf bytes.Buffer
			d := newDotWriter(&buf)
			for _, part := range []string{tc.in[:split], tc.in[split:]} {
				if n, err := d.Write([]byte(part)); n != len(part) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.wire {
				t.Errorf("%q split at %d: wire %q, want %q", tc.in, split, buf.String(), tc.wire)
			}
		}
	}
}

func TestXtext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain@example.org", "plain@example.org"},
		{"a+b=c", "a+2Bb+3Dc"},
		{"sp ace", "sp+20ace"},
		{"\x01\x7f", "+01+7F"},
		{"caf\xc3\xa9", "caf+C3+A9"},
		{"~!", "~!"},
	}
	for _, tc := range tests {
		if got := xtext(tc.in); got != tc.want {
			t.Errorf("xtext(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	utf := []struct{ in, want string }{
		{"user@example.org", "user@example.org"},
		{"us\u00e9r@example.org", `us\x{E9}r@example.org`},
		{"\u7528@example.org", `\x{7528}@example.org`},
		{"a+b=c\\d", `a\x{2B}b\x{3D}c\x{5C}d`},
		{"\u0100", `\x{100}`},
	}
	for _, tc := range utf {
		if got := utf8AddrXtext(tc.in); got != tc.want {
			t.Errorf("utf8AddrXtext(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got, err := encodeORcpt("utf-8;\u00e9@example.org"); err != nil || got != `utf-8;\x{E9}@example.org` {
		t.Errorf("encodeORcpt utf-8 = %q, %v", got, err)
	}
	if got, err := encodeORcpt("rfc822;a+b@example.org"); err != nil || got != "rfc822;a+2Bb@example.org" {
		t.Errorf("encodeORcpt rfc822 = %q, %v", got, err)
	}
	for _, bad := range []string{"a@example.org", ";a@example.org", "rfc822;", "rfc 822;a@example.org"} {
		if _, err := encodeORcpt(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("encodeORcpt(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestTimeoutDefaults(t *testing.T) {
	got := Timeouts{DataBlock: time.Second, DataTerm: -1}.withDefaults()
	want := Timeouts{Greeting: 5 * time.Minute, Command: 5 * time.Minute, DataInit: 2 * time.Minute, DataBlock: time.Second, DataTerm: 10 * time.Minute}
	if got != want {
		t.Errorf("withDefaults = %+v, want %+v", got, want)
	}
}

// indexLineBreak finds what bytes.IndexAny(p, "\r\n") finds.
func TestIndexLineBreakAgreesWithIndexAny(t *testing.T) {
	alphabet := []byte("ab.\r\n")
	for n := range 6 {
		// every string of length n over the alphabet
		total := 1
		for range n {
			total *= len(alphabet)
		}
		for k := range total {
			p := make([]byte, n)
			for i, v := 0, k; i < n; i, v = i+1, v/len(alphabet) {
				p[i] = alphabet[v%len(alphabet)]
			}
			if got, want := indexLineBreak(p), bytes.IndexAny(p, "\r\n"); got != want {
				t.Fatalf("indexLineBreak(%q) = %d, want %d", p, got, want)
			}
		}
	}
}
