package mtasts

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSTS05_ParseValid(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		mode   Mode
		maxAge time.Duration
		mx     []string
	}{
		{
			name:   "RFC example CRLF",
			body:   "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			mode:   ModeEnforce,
			maxAge: 604800 * time.Second,
			mx:     []string{"mail.example.com", "*.example.net", "backupmx.example.com"},
		},
		{
			name:   "LF only, no final newline",
			body:   "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400",
			mode:   ModeTesting,
			maxAge: 86400 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "CRLF and LF mixed",
			body:   "version: STSv1\r\nmode: enforce\nmx: mx.example.test\r\nmax_age: 10\n",
			mode:   ModeEnforce,
			maxAge: 10 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "whitespace around values and keys",
			body:   "version:STSv1\nmode:\t enforce \t\nmx:   mx.example.test   \nmax_age :  60\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "unknown keys ignored, even repeated",
			body:   "version: STSv1\nfoo: bar\nmode: enforce\nfoo: baz qux\nx-y.z_1: anything at all\nmx: mx.example.test\nmax_age: 60\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "mode none without mx",
			body:   "version: STSv1\nmode: none\nmax_age: 86400\n",
			mode:   ModeNone,
			maxAge: 86400 * time.Second,
		},
		{
			name:   "mode none with mx",
			body:   "version: STSv1\nmode: none\nmx: mx.example.test\nmax_age: 86400\n",
			mode:   ModeNone,
			maxAge: 86400 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "oversize max_age clamped",
			body:   "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 9999999999\n",
			mode:   ModeEnforce,
			maxAge: MaxMaxAge,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "max_age at the maximum",
			body:   "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 31557600\n",
			mode:   ModeEnforce,
			maxAge: 31557600 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "max_age one above the maximum clamped",
			body:   "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 31557601\n",
			mode:   ModeEnforce,
			maxAge: MaxMaxAge,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "max_age zero",
			body:   "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 0\n",
			mode:   ModeTesting,
			maxAge: 0,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "max_age with leading zeros, 10 digits",
			body:   "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 0000000060\n",
			mode:   ModeTesting,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "mx patterns lowercased, trailing dot dropped",
			body:   "version: STSv1\nmode: enforce\nmx: MX.Example.TEST.\nmx: *.Example.Net\nmax_age: 60\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test", "*.example.net"},
		},
		{
			name:   "blank lines and trailing blank line tolerated",
			body:   "version: STSv1\r\n\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 60\r\n\r\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "fields in any order",
			body:   "max_age: 60\nmx: mx.example.test\nmode: enforce\nversion: STSv1\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "byte order mark",
			body:   "\ufeffversion: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 60\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"mx.example.test"},
		},
		{
			name:   "single-label mx and xn-- labels",
			body:   "version: STSv1\nmode: enforce\nmx: localhost\nmx: xn--mnchen-3ya.example\nmax_age: 60\n",
			mode:   ModeEnforce,
			maxAge: 60 * time.Second,
			mx:     []string{"localhost", "xn--mnchen-3ya.example"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p.Mode != tt.mode || p.MaxAge != tt.maxAge || !slices.Equal(p.MX, tt.mx) {
				t.Errorf("Parse = {%s %v %q}, want {%s %v %q}", p.Mode, p.MaxAge, p.MX, tt.mode, tt.maxAge, tt.mx)
			}
			if string(p.Raw) != tt.body {
				t.Errorf("Raw = %q, want the body", p.Raw)
			}
		})
	}
}

func TestSTS05_ParseInvalid(t *testing.T) {
	const rest = "mode: enforce\nmx: mx.example.test\nmax_age: 60\n"
	tests := []struct {
		name string
		body string
	}{
		{"empty body", ""},
		{"only whitespace", " \r\n\n\t\n"},
		{"no version", rest},
		{"wrong version", "version: STSv2\n" + rest},
		{"version lowercase value", "version: stsv1\n" + rest},
		{"version key capitalized", "Version: STSv1\n" + rest},
		{"empty version", "version:\n" + rest},
		{"duplicate version", "version: STSv1\nversion: STSv1\n" + rest},
		{"no mode", "version: STSv1\nmx: mx.example.test\nmax_age: 60\n"},
		{"bad mode", "version: STSv1\nmode: strict\nmx: mx.example.test\nmax_age: 60\n"},
		{"mode capitalized", "version: STSv1\nmode: Enforce\nmx: mx.example.test\nmax_age: 60\n"},
		{"duplicate mode", "version: STSv1\nmode: enforce\nmode: none\nmx: mx.example.test\nmax_age: 60\n"},
		{"duplicate mode same value", "version: STSv1\nmode: enforce\nmode: enforce\nmx: mx.example.test\nmax_age: 60\n"},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: mx.example.test\n"},
		{"duplicate max_age", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 60\nmax_age: 60\n"},
		{"negative max_age", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: -1\n"},
		{"plus max_age", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: +60\n"},
		{"max_age 11 digits", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 00000000060\n"},
		{"max_age with unit", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 60s\n"},
		{"max_age float", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 6.0\n"},
		{"max_age empty", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age:\n"},
		{"max_age inner space", "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 6 0\n"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 60\n"},
		{"testing without mx", "version: STSv1\nmode: testing\nmax_age: 60\n"},
		{"line without colon", "version: STSv1\n" + rest + "garbage\n"},
		{"empty key", "version: STSv1\n" + rest + ": value\n"},
		{"key with inner space", "version: STSv1\n" + rest + "my key: value\n"},
		{"key starting with underscore", "version: STSv1\n" + rest + "_x: value\n"},
		{"bare CR inside a line", "version: STSv1\r" + rest},
		{"CR line endings only", "version: STSv1\rmode: enforce\rmx: mx.example.test\rmax_age: 60\r"},
		{"NUL byte", "version: STSv1\n" + rest + "x: a\x00b\n"},
		{"empty mx", "version: STSv1\nmode: enforce\nmx:\nmax_age: 60\n"},
		{"mx wildcard alone", "version: STSv1\nmode: enforce\nmx: *.\nmax_age: 60\n"},
		{"mx star alone", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n"},
		{"mx star without dot", "version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 60\n"},
		{"mx inner wildcard", "version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 60\n"},
		{"mx double wildcard", "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 60\n"},
		{"mx partial wildcard label", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 60\n"},
		{"mx empty label", "version: STSv1\nmode: enforce\nmx: mx..example.com\nmax_age: 60\n"},
		{"mx leading dot", "version: STSv1\nmode: enforce\nmx: .example.com\nmax_age: 60\n"},
		{"mx two names on a line", "version: STSv1\nmode: enforce\nmx: a.example.com b.example.com\nmax_age: 60\n"},
		{"mx comma list", "version: STSv1\nmode: enforce\nmx: a.example.com,b.example.com\nmax_age: 60\n"},
		{"mx underscore", "version: STSv1\nmode: enforce\nmx: mx_1.example.com\nmax_age: 60\n"},
		{"mx hyphen at label start", "version: STSv1\nmode: enforce\nmx: -mx.example.com\nmax_age: 60\n"},
		{"mx IP address", "version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmax_age: 60\n"},
		{"mx U-label", "version: STSv1\nmode: enforce\nmx: münchen.example\nmax_age: 60\n"},
		{"mx label too long", "version: STSv1\nmode: enforce\nmx: " + strings.Repeat("a", 64) + ".example\nmax_age: 60\n"},
		{"mx URL", "version: STSv1\nmode: enforce\nmx: https://mx.example.com\nmax_age: 60\n"},
		{"invalid mx in mode none", "version: STSv1\nmode: none\nmx: *\nmax_age: 60\n"},
		{"HTML page", "<html><body>version: STSv1</body></html>\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", tt.body, p)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with error %v", err)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("error %v does not wrap ErrInvalidPolicy", err)
			}
		})
	}
}

func TestSTS06_MXMatching(t *testing.T) {
	p, err := Parse([]byte("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: MX.Example.ORG.\nmax_age: 60\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"mail.example.com.", true},
		{"MAIL.EXAMPLE.COM", true},
		{"MAIL.Example.COM.", true},
		{"mx.example.org", true},
		{"MX.Example.ORG.", true},
		{"example.com", false},
		{"other.example.com", false},
		{"xmail.example.com", false},
		{"mail.example.com.evil", false},
		{"a.mail.example.com", false},
		{"mx1.example.net", true},
		{"MX1.EXAMPLE.NET.", true},
		{"example.net", false},
		{"example.net.", false},
		{"a.b.example.net", false},
		{".example.net", false},
		{"*.example.net", false},
		{"mx1.example.net.evil", false},
		{"mx1example.net", false},
		{"", false},
		{".", false},
	}
	for _, tt := range tests {
		if got := p.MatchMX(tt.host); got != tt.want {
			t.Errorf("MatchMX(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	var nilPolicy *Policy
	if nilPolicy.MatchMX("mail.example.com") {
		t.Error("nil policy matched")
	}
}

func TestSTS06_PatternValidation(t *testing.T) {
	tests := []struct {
		pattern string
		want    string // "" = invalid
	}{
		{"example.com", "example.com"},
		{"*.example.com", "*.example.com"},
		{"*.Example.COM.", "*.example.com"},
		{"mx-1.example.com", "mx-1.example.com"},
		{"*.", ""},
		{"*", ""},
		{"*example.com", ""},
		{"a*.example.com", ""},
		{"*.*.example.com", ""},
		{"example.*", ""},
		{"", ""},
		{".", ""},
		{"example..com", ""},
		{"exa mple.com", ""},
		{"10.0.0.1", ""},
		{strings.Repeat("a.", 127) + "com", ""}, // 257 octets
	}
	for _, tt := range tests {
		got, err := normalizePattern(tt.pattern)
		if tt.want == "" {
			if err == nil {
				t.Errorf("normalizePattern(%q) = %q, want an error", tt.pattern, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizePattern(%q) = %q, %v, want %q", tt.pattern, got, err, tt.want)
		}
	}
}
