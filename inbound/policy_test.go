package inbound

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

func TestSRV01_RenderPolicy(t *testing.T) {
	tests := []struct {
		name string
		p    PolicyConfig
		want string
	}{
		{"enforce", examplePolicy, examplePolicyBody},
		{"testing, one mx", PolicyConfig{Domain: "example.net", Mode: ModeTesting, MaxAge: 86400, MX: []string{"mx.example.net"}},
			"version: STSv1\r\nmode: testing\r\nmx: mx.example.net\r\nmax_age: 86400\r\n"},
		{"none without mx", PolicyConfig{Domain: "example.net", Mode: ModeNone, MaxAge: 0},
			"version: STSv1\r\nmode: none\r\nmax_age: 0\r\n"},
		{"names lower-cased, trailing dots dropped", PolicyConfig{Domain: "Example.NET.", Mode: "Enforce", MaxAge: MaxMaxAge, MX: []string{"MX1.Example.NET.", "*.Example.NET"}},
			"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: *.example.net\r\nmax_age: 31557600\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderPolicy(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
			// Every line ends in CRLF; there is no bare LF.
			if strings.Count(string(got), "\n") != strings.Count(string(got), "\r\n") {
				t.Errorf("bare LF in %q", got)
			}
			back, err := ParsePolicy(got)
			if err != nil {
				t.Fatalf("the rendered policy does not parse: %v", err)
			}
			if back.Mode != strings.ToLower(tt.p.Mode) || back.MaxAge != tt.p.MaxAge || len(back.MX) != len(tt.p.MX) {
				t.Errorf("parsed back as %+v", back)
			}
		})
	}
}

func TestRenderPolicyRejectsBadValues(t *testing.T) {
	ok := examplePolicy
	tests := []struct {
		name   string
		modify func(p *PolicyConfig)
		want   string
	}{
		{"no domain", func(p *PolicyConfig) { p.Domain = "" }, "empty name"},
		{"single label domain", func(p *PolicyConfig) { p.Domain = "localhost" }, "not a fully qualified"},
		{"bad mode", func(p *PolicyConfig) { p.Mode = "enforcing" }, `mode "enforcing"`},
		{"negative max_age", func(p *PolicyConfig) { p.MaxAge = -1 }, "max_age -1"},
		{"max_age too large", func(p *PolicyConfig) { p.MaxAge = MaxMaxAge + 1 }, "max_age 31557601"},
		{"enforce without mx", func(p *PolicyConfig) { p.MX = nil }, "at least one mx"},
		{"line injection in mx", func(p *PolicyConfig) { p.MX = []string{"mx.example.org\r\nmode: none"} }, "not allowed"},
		{"space in mx", func(p *PolicyConfig) { p.MX = []string{"mx example.org"} }, "not allowed"},
		{"wildcard inside mx", func(p *PolicyConfig) { p.MX = []string{"mail.*.example.org"} }, "not allowed"},
		{"bare wildcard", func(p *PolicyConfig) { p.MX = []string{"*.org"} }, "not a fully qualified"},
		{"label too long", func(p *PolicyConfig) { p.MX = []string{strings.Repeat("a", 64) + ".example.org"} }, "longer than 63"},
		{"hyphen at label start", func(p *PolicyConfig) { p.MX = []string{"-mx.example.org"} }, "hyphen"},
		{"wildcard domain", func(p *PolicyConfig) { p.Domain = "*.example.org" }, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			p.MX = append([]string(nil), ok.MX...)
			tt.modify(&p)
			_, err := RenderPolicy(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RenderPolicy: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

var policyIDPattern = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)

func TestSRV04_PolicyIDFromContent(t *testing.T) {
	base := mustRender(t, examplePolicy)
	variants := map[string]PolicyConfig{
		"mode":     {Domain: "example.org", Mode: ModeTesting, MaxAge: 604800, MX: examplePolicy.MX},
		"max_age":  {Domain: "example.org", Mode: ModeEnforce, MaxAge: 604801, MX: examplePolicy.MX},
		"mx added": {Domain: "example.org", Mode: ModeEnforce, MaxAge: 604800, MX: append([]string{"mx2.example.org"}, examplePolicy.MX...)},
		"mx order": {Domain: "example.org", Mode: ModeEnforce, MaxAge: 604800, MX: []string{examplePolicy.MX[1], examplePolicy.MX[0]}},
	}
	id := PolicyID(base)
	if !policyIDPattern.MatchString(id) {
		t.Fatalf("PolicyID = %q: not 1-32 alphanumerics (RFC 8461 §3.1)", id)
	}
	if again := PolicyID(mustRender(t, examplePolicy)); again != id {
		t.Errorf("PolicyID not deterministic: %q then %q", id, again)
	}
	seen := map[string]string{id: "base"}
	for name, p := range variants {
		other := PolicyID(mustRender(t, p))
		if !policyIDPattern.MatchString(other) {
			t.Errorf("%s: PolicyID = %q: not 1-32 alphanumerics", name, other)
		}
		if prev, dup := seen[other]; dup {
			t.Errorf("changing the %s gives the same id as %s: %q", name, prev, other)
		}
		seen[other] = name
	}
	// The served id is the id of the served bytes.
	srv, err := New(Options{Policies: []PolicyConfig{examplePolicy}, ACME: &ACMEOptions{CacheDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.PolicyIDs()["example.org"]; got != id {
		t.Errorf("PolicyIDs()[example.org] = %q, want %q", got, id)
	}
}

func mustRender(t *testing.T, p PolicyConfig) []byte {
	t.Helper()
	b, err := RenderPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSRV05_MaxAgeBounds(t *testing.T) {
	tests := []struct {
		maxAge   int
		wantErr  bool
		wantWarn bool
	}{
		{0, false, true},
		{3600, false, true},
		{86399, false, true},
		{86400, false, false},
		{604800, false, false},
		{MaxMaxAge, false, false},
		{MaxMaxAge + 1, true, false},
	}
	for _, tt := range tests {
		logs := &logRecorder{}
		p := examplePolicy
		p.MaxAge = tt.maxAge
		_, err := New(Options{Policies: []PolicyConfig{p}, ACME: &ACMEOptions{CacheDir: t.TempDir()}, Logger: slog.New(logs)})
		if (err != nil) != tt.wantErr {
			t.Errorf("max_age %d: New error %v, want error %v", tt.maxAge, err, tt.wantErr)
		}
		if warned := containsAny(logs.messages(slog.LevelWarn), "max_age"); warned != tt.wantWarn {
			t.Errorf("max_age %d: warned %v, want %v (%v)", tt.maxAge, warned, tt.wantWarn, logs.messages(slog.LevelWarn))
		}
	}
}

func TestMatchMX(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"mail.example.org", "mail.example.org", true},
		{"mail.example.org", "MAIL.Example.org.", true},
		{"mail.example.org.", "mail.example.org", true},
		{"mail.example.org", "mail2.example.org", false},
		{"mail.example.org", "example.org", false},
		{"*.example.org", "mx1.example.org", true},
		{"*.example.org", "MX1.EXAMPLE.ORG.", true},
		{"*.example.org", "example.org", false},       // RFC 8461 §4.1: the wildcard needs a label
		{"*.example.org", "a.b.example.org", false},   // and matches one label only
		{"*.example.org", ".example.org", false},      // empty label
		{"*.example.org", "mx1.example.org.x", false}, // suffix only
		{"*.mx.example.org", "a.mx.example.org", true},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := MatchMX(tt.pattern, tt.host); got != tt.want {
			t.Errorf("MatchMX(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name, body string
		want       string // error substring; empty for success
	}{
		{"served form", examplePolicyBody, ""},
		{"LF line endings", "version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 86400\n", ""},
		{"unknown keys ignored", "version: STSv1\nmode: none\nmax_age: 86400\nfoo: bar\n", ""},
		{"no version", "mode: enforce\nmx: mx.example.org\nmax_age: 86400\n", "no version"},
		{"wrong version", "version: STSv2\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n", "STSv2"},
		{"no mode", "version: STSv1\nmx: mx.example.org\nmax_age: 86400\n", "no mode"},
		{"bad mode", "version: STSv1\nmode: on\nmx: mx.example.org\nmax_age: 86400\n", `mode "on"`},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: mx.example.org\n", "no max_age"},
		{"bad max_age", "version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: -5\n", "max_age"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 86400\n", "without mx"},
		{"garbage line", "version: STSv1\n<html>\n", "not \"key: value\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.body))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
