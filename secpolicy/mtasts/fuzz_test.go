package mtasts

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics and never accepts a policy that
// violates checklist STS05, and that MatchMX follows STS06 for what it
// accepts. Run with: go test -fuzz=FuzzParse ./secpolicy/mtasts/
func FuzzParse(f *testing.F) {
	seeds := []string{
		"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
		"version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400",
		"version: STSv1\nmode: none\nmax_age: 0\n",
		"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 9999999999\n",
		"version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\n",
		"version:STSv1\nmode:\tenforce\nmx:  *.Example.COM.  \nmax_age :60\nfoo: bar\n\n",
		"version: STSv1\rmode: enforce\n",
		"\ufeffversion: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n",
		"mode: none\n",
		"",
		":",
		"\n\n\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := Parse(body)
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned a policy and the error %v", err)
			}
			return
		}
		if p == nil {
			t.Fatal("Parse returned neither a policy nor an error")
		}
		checkPolicyInvariants(t, p, body)
	})
}

// checkPolicyInvariants asserts what STS05 and STS06 guarantee of a policy
// Parse accepted, independently of the parser's own helpers where it can.
func checkPolicyInvariants(t *testing.T, p *Policy, body []byte) {
	t.Helper()
	if !bytes.Equal(p.Raw, body) {
		t.Fatalf("Raw %q differs from the body %q", p.Raw, body)
	}
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	default:
		t.Fatalf("mode %q accepted", p.Mode)
	}
	if p.MaxAge < 0 || p.MaxAge > 31557600*time.Second || p.MaxAge%time.Second != 0 {
		t.Fatalf("max_age %v accepted", p.MaxAge)
	}
	if p.Mode != ModeNone && len(p.MX) == 0 {
		t.Fatalf("mode %s accepted without mx", p.Mode)
	}
	// Each required field occurs exactly once, on a line of its own.
	text := strings.TrimPrefix(string(body), "\ufeff")
	counts := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.Trim(line, " \t") == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %q without a colon accepted", line)
		}
		k = strings.Trim(k, " \t")
		v = strings.Trim(v, " \t")
		if k == "" {
			t.Fatalf("line %q with an empty key accepted", line)
		}
		counts[k]++
		switch k {
		case "version":
			if v != "STSv1" {
				t.Fatalf("version %q accepted", v)
			}
		case "mode":
			if Mode(v) != p.Mode {
				t.Fatalf("mode line %q but Mode %q", v, p.Mode)
			}
		case "max_age":
			if v == "" || len(v) > 10 || strings.Trim(v, "0123456789") != "" {
				t.Fatalf("max_age %q accepted", v)
			}
		}
		if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
			t.Fatalf("control character accepted in %q", line)
		}
	}
	for _, k := range []string{"version", "mode", "max_age"} {
		if counts[k] != 1 {
			t.Fatalf("%s occurs %d times", k, counts[k])
		}
	}
	if counts["mx"] != len(p.MX) {
		t.Fatalf("%d mx lines but %d patterns", counts["mx"], len(p.MX))
	}
	for _, mx := range p.MX {
		name := strings.TrimPrefix(mx, "*.")
		if name == "" || strings.ContainsAny(name, "* \t") || strings.HasSuffix(mx, ".") ||
			strings.HasPrefix(name, ".") || strings.Contains(name, "..") || strings.ToLower(mx) != mx {
			t.Fatalf("mx pattern %q accepted", mx)
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("mx pattern %q accepted", mx)
			}
		}
		// STS06 for this pattern alone.
		if wild := strings.HasPrefix(mx, "*."); wild {
			if matchPattern(mx, name) {
				t.Fatalf("%q matches its own base %q", mx, name)
			}
			if !matchPattern(mx, "x."+name) || !p.MatchMX("X."+strings.ToUpper(name)+".") {
				t.Fatalf("%q does not match x.%s", mx, name)
			}
			if matchPattern(mx, "a.b."+name) {
				t.Fatalf("%q matches a.b.%s", mx, name)
			}
		} else if !p.MatchMX(strings.ToUpper(mx)+".") || !matchPattern(mx, mx) {
			t.Fatalf("%q does not match itself", mx)
		}
	}
	// Parsing is deterministic.
	q, err := Parse(p.Raw)
	if err != nil || q.Mode != p.Mode || q.MaxAge != p.MaxAge || !slices.Equal(q.MX, p.MX) {
		t.Fatalf("reparse differs: %+v, %v", q, err)
	}
	if err := p.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
}
