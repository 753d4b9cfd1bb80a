package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// testHash is a bcrypt hash of a random password nobody knows.
const testHash = "$2a$12$d7Wq0ahUln5Kecc/1y83hOHqGlA3h/k6szEMwJGvLtsDGUARYKv4a"

// head is a valid configuration of 5 lines ending inside [[listener]];
// cases append to it, so their first own line is line 6.
const head = `hostname = "relay.example.com"
data_dir = "/var/lib/relay"
[[listener]]
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.0/8"]
`

// headNoTrust is head without trusted_networks: 4 lines.
const headNoTrust = `hostname = "relay.example.com"
data_dir = "/var/lib/relay"
[[listener]]
address = "127.0.0.1:2525"
`

// inbound is a valid [inbound] table on lines 6-9 after head.
const inbound = `[inbound]
address = ":443"
cert_file = "c.pem"
key_file = "k.pem"
`

const user = `[[user]]
name = "mailraven"
password_hash = "` + testHash + `"
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name   string
		doc    string
		prefix string // the error starts with it: "relay.toml:7:" or "relay.toml: "
		want   string // the error contains it
		hidden string // no error contains it
	}{
		// TOML syntax.
		{"syntax error", head + "tls = \"none\n", "relay.toml:6:", "TOML syntax error", ""},
		{"duplicate key", head + "address = \"127.0.0.1:2526\"\n", "relay.toml:6:", "already defined", ""},
		{"redefined table", head + "[dns]\n[dns]\n", "relay.toml:7:", "TOML syntax error: table dns already exists", ""},

		// Unknown keys.
		{"unknown key with suggestion", head + "[delivery]\nworkrs = 4\n", "relay.toml:7:", `delivery.workrs is not a known key: did you mean "workers"?`, ""},
		{"unknown key transposed", head + "[delivery]\nmta_sst = true\n", "relay.toml:7:", `did you mean "mta_sts"?`, ""},
		{"unknown key prefix", head + "tls = \"starttls\"\nauth = \"required\"\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n[[user]]\nname = \"a\"\npassword = \"x\"\n", "relay.toml:13:", `user[0].password is not a known key: did you mean "password_hash"?`, ""},
		{"unknown key listing", head + "[delivery]\ncolour = 4\n", "relay.toml:7:", "the keys of [delivery] are workers, per_host_connections", ""},
		{"key in wrong table", head + "workers = 4\n", "relay.toml:6:", `listener[0].workers is not a known key in [[listener]]: "workers" belongs in [delivery]`, ""},
		{"unknown table", head + "[listner]\n", "relay.toml:6:", `listner is not a known key: did you mean "listener"?`, ""},
		{"unknown key in second array table", head + "[[listener]]\naddress = \"127.0.0.1:2526\"\ntrusted = [\"127.0.0.1\"]\n", "relay.toml:8:", `listener[1].trusted is not a known key: did you mean "trusted_networks"?`, ""},
		{"unknown key in inline table", head + "[inbound]\naddress = \":443\"\nacme = true\nacme_email = \"a@example.org\"\ntls_rpt = { path = \"/r\", maxbody = \"1MiB\" }\n", "relay.toml:10:", `inbound.tls_rpt.maxbody is not a known key: did you mean "max_body"?`, ""},

		// Wrong types.
		{"string for integer", head + "[limits]\nmax_recipients = \"100\"\n", "relay.toml:7:", `limits.max_recipients = "100" is a string, but an integer is needed: remove the quotes, max_recipients = 100`, ""},
		{"integer for string", head + "[metrics]\naddress = 9109\n", "relay.toml:7:", `metrics.address = 9109 is an integer, but a string is needed: put it in quotes`, ""},
		{"string for boolean", head + "[delivery]\ndane = \"true\"\n", "relay.toml:7:", `delivery.dane = "true" is a string, but true or false is needed: remove the quotes, dane = true`, ""},
		{"float for integer", head + "[delivery]\nworkers = 1.5\n", "relay.toml:7:", "it must be a whole number", ""},
		{"string for array", headNoTrust + "trusted_networks = \"127.0.0.0/8\"\n", "relay.toml:5:", `put it in brackets, trusted_networks = ["127.0.0.0/8"]`, ""},
		{"single table for array of tables", "data_dir = \"d\"\n[listener]\naddress = \"127.0.0.1:2525\"\n", "relay.toml:2:", "write the header with double brackets, [[listener]]", ""},
		{"array of tables for table", head + "[[dns]]\nresolver = \"127.0.0.1:53\"\n", "relay.toml:6:", "write the header with single brackets, [dns]", ""},
		{"wrong type reported once", head + "tls = 5\nauth = \"required\"\n", "relay.toml:6:", `listener[0].tls = 5 is an integer, but a string is needed`, ""},
		{"password hash type hidden", head + "[[user]]\nname = \"a\"\npassword_hash = [\"hunter2\"]\n", "relay.toml:8:", "user[0].password_hash = (value not shown) is an array", "hunter2"},

		// Enumerations.
		{"tls enum", head + "tls = \"ssl\"\n", "relay.toml:6:", `listener[0].tls = "ssl" is not allowed: use one of "none", "starttls", "implicit"`, ""},
		{"auth enum", head + "auth = \"yes\"\n", "relay.toml:6:", `listener[0].auth = "yes" is not allowed: use one of "none", "optional", "required"`, ""},
		{"log level enum", head + "[log]\nlevel = \"verbose\"\n", "relay.toml:7:", `log.level = "verbose" is not allowed: use one of "debug", "info", "warn", "error"`, ""},
		{"log format enum", head + "[log]\nformat = \"xml\"\n", "relay.toml:7:", `log.format = "xml" is not allowed: use one of "text", "json"`, ""},
		{"route security enum", head + "[[route]]\ndomain = \"partner.example\"\nsecurity = \"dane\"\n", "relay.toml:8:", `route[0].security = "dane" is not allowed: use one of "dane-only", "mta-sts-or-dane", "tls-verify", "tls", "none" (did you mean "dane-only"?)`, ""},
		{"mta_sts mode enum", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"enforced\"\nmx = [\"mail.example.org\"]\n", "relay.toml:12:", `inbound.mta_sts[0].mode = "enforced" is not allowed: use one of "enforce", "testing", "none" (did you mean "enforce"?)`, ""},

		// Durations, sizes, counts.
		{"bad duration", head + "[delivery]\nfirst_retry = \"5 minutes\"\n", "relay.toml:7:", `delivery.first_retry = "5 minutes" is not a duration (unknown unit " minutes")`, ""},
		{"duration without unit", head + "[delivery]\nfirst_retry = 300\n", "relay.toml:7:", `write it as a string with a unit, first_retry = "300s"`, ""},
		{"duration number without unit", head + "[dns]\ntimeout = \"5\"\n", "relay.toml:7:", `dns.timeout = "5" is not a duration (5 has no unit)`, ""},
		{"zero duration", head + "[limits]\ncommand_timeout = \"0s\"\n", "relay.toml:7:", `limits.command_timeout = "0s" must be positive, such as "5m"`, ""},
		{"bad size", head + "[limits]\nmax_message_size = \"50 megabytes\"\n", "relay.toml:7:", `limits.max_message_size = "50 megabytes" is not a size (unknown unit "megabytes")`, ""},
		{"negative size", head + "[limits]\nmax_message_size = -1\n", "relay.toml:7:", "limits.max_message_size = -1 is negative", ""},
		{"zero size", head + inbound + "[inbound.tls_rpt]\nmax_body = 0\n", "relay.toml:11:", "inbound.tls_rpt.max_body = 0 must be positive", ""},
		{"zero workers", head + "[delivery]\nworkers = 0\n", "relay.toml:7:", "delivery.workers = 0 must be positive; the default is 64", ""},
		{"negative per-host connections", head + "[delivery]\nper_host_connections = -2\n", "relay.toml:7:", "delivery.per_host_connections = -2 must be positive", ""},
		{"zero max connections", head + "[limits]\nmax_connections = 0\n", "relay.toml:7:", "limits.max_connections = 0 must be positive", ""},
		{"zero max recipients", head + "[limits]\nmax_recipients = 0\n", "relay.toml:7:", "limits.max_recipients = 0 must be positive", ""},
		{"short lines", head + "[limits]\nmax_line_length = 512\n", "relay.toml:7:", "limits.max_line_length = 512 is below 1000", ""},
		{"lifetime shorter than first retry", head + "[delivery]\nqueue_lifetime = \"1m\"\n", "relay.toml:7:", `delivery.queue_lifetime = "1m" is shorter than delivery.first_retry = "5m"`, ""},
		{"retry cap below first retry", head + "[delivery]\nfirst_retry = \"1h\"\nmax_retry_interval = \"30m\"\n", "relay.toml:8:", `delivery.max_retry_interval = "30m" is shorter than delivery.first_retry = "1h"`, ""},
		{"negative delay warning", head + "[delivery]\ndelay_warning = \"-1h\"\n", "relay.toml:7:", `delivery.delay_warning = "-1h" is negative`, ""},

		// Trusted networks.
		{"bad cidr length", headNoTrust + "trusted_networks = [\"10.0.0.0/33\"]\n", "relay.toml:5:", `listener[0].trusted_networks[0] = "10.0.0.0/33" is not a network (the length must be a number from 0 to 32)`, ""},
		{"bad cidr address", headNoTrust + "trusted_networks = [\n  \"127.0.0.1\",\n  \"10.0.0.300/8\",\n]\n", "relay.toml:7:", `listener[0].trusted_networks[1] = "10.0.0.300/8" is not a network ("10.0.0.300" is not an IP address)`, ""},
		{"open relay ipv4", headNoTrust + "trusted_networks = [\"0.0.0.0/0\"]\n", "relay.toml:5:", `listener[0].trusted_networks[0] = "0.0.0.0/0" covers every IPv4 address: clients there may relay without AUTH, so the relay would be an open relay`, ""},
		{"open relay ipv6", headNoTrust + "trusted_networks = [\"::/0\"]\n", "relay.toml:5:", `"::/0" covers every IPv6 address`, ""},
		{"too wide ipv4", headNoTrust + "trusted_networks = [\"10.0.0.0/7\"]\n", "relay.toml:5:", `"10.0.0.0/7" is wider than /8: clients there may relay without AUTH, so the relay would be an open relay`, ""},
		{"too wide ipv6", headNoTrust + "trusted_networks = [\"2000::/15\"]\n", "relay.toml:5:", `"2000::/15" is wider than /16`, ""},
		{"too wide ipv4-mapped", headNoTrust + "trusted_networks = [\"::ffff:0.0.0.0/96\"]\n", "relay.toml:5:", `is wider than /104`, ""},

		// Listeners, TLS, users.
		{"no listener", "data_dir = \"/var/lib/relay\"\n", "relay.toml: ", "listener is missing: add at least one [[listener]] table", ""},
		{"no data_dir", "[[listener]]\naddress = \"127.0.0.1:2525\"\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml: ", "data_dir is missing", ""},
		{"empty data_dir", strings.Replace(head, `"/var/lib/relay"`, `""`, 1), "relay.toml:2:", "data_dir is missing: set the directory", ""},
		{"bad hostname", "hostname = \"relay_1.example.com\"\n" + head[strings.Index(head, "\n")+1:], "relay.toml:1:", `hostname = "relay_1.example.com" is not a valid host name ('_' is not allowed`, ""},
		{"listener address missing", "data_dir = \"d\"\n[[listener]]\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml:2:", `listener[0].address is missing: set the address to listen on, such as "127.0.0.1:2525"`, ""},
		{"listener address without port", "data_dir = \"d\"\n[[listener]]\naddress = \"127.0.0.1\"\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml:3:", `listener[0].address = "127.0.0.1" is not host:port (missing port in address)`, ""},
		{"listener bad port", "data_dir = \"d\"\n[[listener]]\naddress = \"127.0.0.1:smtp\"\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml:3:", `has a bad port ("smtp" is not a number)`, ""},
		{"auth without tls", head + "auth = \"optional\"\n" + user, "relay.toml:6:", `listener[0].auth = "optional" needs tls = "starttls" or "implicit": AUTH is only offered over TLS`, ""},
		{"tls without certificate", head + "tls = \"starttls\"\n", "relay.toml:6:", `listener[0].tls = "starttls" needs a certificate: set cert_file and key_file in the [tls] table`, ""},
		{"cert without key", head + "[tls]\ncert_file = \"c.pem\"\n", "relay.toml:7:", "tls.cert_file is set but tls.key_file is not", ""},
		{"key without cert", head + "[tls]\nkey_file = \"k.pem\"\n", "relay.toml:7:", "tls.key_file is set but tls.cert_file is not", ""},
		{"no auth and no trusted networks", headNoTrust, "relay.toml:3:", `listener[0].trusted_networks is empty and auth = "none": the listener could accept mail from nobody`, ""},
		{"empty trusted networks", headNoTrust + "trusted_networks = []\n", "relay.toml:5:", "the listener could accept mail from nobody", ""},
		{"auth without users", head + "tls = \"implicit\"\nauth = \"required\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "relay.toml:7:", `listener[0].auth = "required" but no [[user]] is configured: nobody could log in`, ""},
		{"duplicate listener address", head + "[[listener]]\naddress = \"127.0.0.1:2525\"\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml:7:", `listener[1].address = "127.0.0.1:2525" conflicts with listener[0].address = "127.0.0.1:2525": both listen on port 2525`, ""},
		{"wildcard listener conflict", head + "[[listener]]\naddress = \":2525\"\ntrusted_networks = [\"127.0.0.1\"]\n", "relay.toml:7:", `listener[1].address = ":2525" conflicts with listener[0].address`, ""},
		{"metrics conflicts with listener", head + "[metrics]\naddress = \"127.0.0.1:2525\"\n", "relay.toml:7:", `metrics.address = "127.0.0.1:2525" conflicts with listener[0].address`, ""},
		{"metrics bad address", head + "[metrics]\naddress = \"9109\"\n", "relay.toml:7:", `metrics.address = "9109" is not host:port`, ""},
		{"duplicate user", head + user + user, "relay.toml:10:", `user[1].name = "mailraven" is already the name of user[0]: user names must be unique`, ""},
		{"user without name", head + "[[user]]\npassword_hash = \"" + testHash + "\"\n", "relay.toml:6:", "user[0].name is missing", ""},
		{"password not a hash", head + "[[user]]\nname = \"a\"\npassword_hash = \"hunter2\"\n", "relay.toml:8:", "user[0].password_hash is not a bcrypt hash", "hunter2"},

		// DNS.
		{"resolver without port", head + "[dns]\nresolver = \"127.0.0.1\"\n", "relay.toml:7:", `dns.resolver = "127.0.0.1" has no port: write "127.0.0.1:53"`, ""},
		{"resolver ipv6 without port", head + "[dns]\nresolver = \"::1\"\n", "relay.toml:7:", `write "[::1]:53"`, ""},
		{"resolver by name", head + "[dns]\nresolver = \"dns.example:53\"\n", "relay.toml:7:", "does not start with an IP address", ""},

		// Routes.
		{"route without domain", head + "[[route]]\nsecurity = \"tls\"\n", "relay.toml:6:", "route[0].domain is missing", ""},
		{"route bad domain", head + "[[route]]\ndomain = \"partner..example\"\n", "relay.toml:7:", `route[0].domain = "partner..example" is not a valid domain name (empty label between dots)`, ""},
		{"duplicate route", head + "[[route]]\ndomain = \"partner.example\"\n[[route]]\ndomain = \"Partner.Example\"\n", "relay.toml:9:", `route[1].domain = "partner.example" already has a route, route[0]`, ""},
		{"bad next hop port", head + "[[route]]\ndomain = \"partner.example\"\nnext_hop = \"smtp.partner.example:99999\"\n", "relay.toml:8:", "is not a host or host:port (port 99999 is out of range)", ""},
		{"bad next hop host", head + "[[route]]\ndomain = \"partner.example\"\nnext_hop = \"smtp partner\"\n", "relay.toml:8:", `route[0].next_hop = "smtp partner" is not a host or host:port`, ""},

		// Inbound.
		{"inbound without address", head + "[inbound]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "relay.toml:6:", `inbound.address is missing: set the address to listen on, such as ":443"`, ""},
		{"inbound without certificate", head + "[inbound]\naddress = \":443\"\n", "relay.toml:6:", "inbound has no certificate: set cert_file and key_file", ""},
		{"inbound cert without key", head + "[inbound]\naddress = \":443\"\ncert_file = \"c.pem\"\n", "relay.toml:8:", "inbound.cert_file is set but inbound.key_file is not", ""},
		{"inbound.cert without key", head + "[inbound]\naddress = \":443\"\n[[inbound.cert]]\ncert_file = \"c.pem\"\n", "relay.toml:8:", "inbound.cert[0].key_file is missing", ""},
		{"acme without email", head + "[inbound]\naddress = \":443\"\nacme = true\n", "relay.toml:6:", "inbound.acme_email is missing: acme = true needs a contact address", ""},
		{"acme bad email", head + "[inbound]\naddress = \":443\"\nacme = true\nacme_email = \"Admin <a@example.org>\"\n", "relay.toml:9:", "without a name or angle brackets", ""},
		{"acme bad directory", head + "[inbound]\naddress = \":443\"\nacme = true\nacme_email = \"a@example.org\"\nacme_directory = \"acme.example\"\n", "relay.toml:10:", `inbound.acme_directory = "acme.example" is not an http(s) URL`, ""},
		{"mta_sts max_age too large", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"enforce\"\nmax_age = 31557601\nmx = [\"mail.example.org\"]\n", "relay.toml:13:", "inbound.mta_sts[0].max_age = 31557601 is more than 31557600 seconds, the most RFC 8461 §3.2 allows", ""},
		{"mta_sts without mx", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"enforce\"\n", "relay.toml:10:", `inbound.mta_sts[0].mx is empty but mode = "enforce"`, ""},
		{"mta_sts without mode", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmx = [\"mail.example.org\"]\n", "relay.toml:10:", "inbound.mta_sts[0].mode is missing", ""},
		{"mta_sts bad mx", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"testing\"\nmx = [\n  \"mail.example.org\",\n  \"mail.*.example.org\",\n]\n", "relay.toml:15:", `inbound.mta_sts[0].mx[1] = "mail.*.example.org" is not an MX host pattern`, ""},
		{"mta_sts without domain", head + inbound + "[[inbound.mta_sts]]\nmode = \"none\"\n", "relay.toml:10:", "inbound.mta_sts[0].domain is missing", ""},
		{"mta_sts duplicate domain", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"none\"\n[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"none\"\n", "relay.toml:14:", `inbound.mta_sts[1].domain = "example.org" already has a policy, inbound.mta_sts[0]`, ""},
		{"tls_rpt relative path", head + inbound + "[inbound.tls_rpt]\npath = \"report\"\n", "relay.toml:11:", `inbound.tls_rpt.path = "report" is not a URL path: it must start with "/"`, ""},
		{"report_smtp without addresses", head + inbound + "[inbound.report_smtp]\naddress = \"127.0.0.1:2526\"\n", "relay.toml:10:", "inbound.report_smtp.addresses is empty", ""},
		{"report_smtp bad address", head + inbound + "[inbound.report_smtp]\naddress = \"127.0.0.1:2526\"\naddresses = [\"tlsrpt\"]\n", "relay.toml:12:", `inbound.report_smtp.addresses[0] = "tlsrpt" is not an email address`, ""},
		{"report_smtp conflicts with inbound", head + inbound + "[inbound.report_smtp]\naddress = \":443\"\naddresses = [\"tlsrpt@example.org\"]\n", "relay.toml:11:", `inbound.report_smtp.address = ":443" conflicts with inbound.address = ":443"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc), "relay.toml")
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q\nconfig: %+v", tt.want, cfg)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			// Each case has exactly one problem: checks must not cascade.
			if len(errs.List) != 1 {
				t.Errorf("got %d errors, want 1:\n%v", len(errs.List), err)
			}
			msg := errs.List[0].Error()
			if !strings.HasPrefix(msg, tt.prefix) || !strings.Contains(msg, tt.want) {
				t.Errorf("error\n  %s\nwant prefix %q and containing\n  %s", msg, tt.prefix, tt.want)
			}
			if tt.hidden != "" && strings.Contains(err.Error(), tt.hidden) {
				t.Errorf("error shows %q, which it must not: %s", tt.hidden, err)
			}
		})
	}
}

func TestParseCollectsAllErrors(t *testing.T) {
	doc := `hostname = "relay.example.com"
data_dir = "/var/lib/relay"
[log]
level = "loud"
[[listener]]
address = "127.0.0.1:2525"
tls = "ssl"
trusted_networks = ["0.0.0.0/0"]
[delivery]
workers = 0
wrkers = 5
first_retry = 5
`
	_, err := Parse([]byte(doc), "relay.toml")
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not *Errors", err)
	}
	want := []string{
		"relay.toml:4: log.level",
		"relay.toml:7: listener[0].tls",
		"relay.toml:8: listener[0].trusted_networks[0]",
		"relay.toml:10: delivery.workers",
		"relay.toml:11: delivery.wrkers",
		"relay.toml:12: delivery.first_retry",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) || len(errs.List) != len(want) {
		t.Fatalf("got %d lines, %d errors, want %d:\n%v", len(lines), len(errs.List), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	var one *Error
	if !errors.As(err, &one) || one.Line != 4 || one.Key != "log.level" || one.File != "relay.toml" {
		t.Errorf("errors.As(*Error) = %+v, want the first problem, log.level at line 4", one)
	}
}

func TestParseWarnings(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // a warning equals or starts with it
	}{
		{"short max_age", head + inbound + "[[inbound.mta_sts]]\ndomain = \"example.org\"\nmode = \"testing\"\nmax_age = 3600\nmx = [\"mail.example.org\"]\n",
			"relay.toml:13: inbound.mta_sts[0].max_age = 3600 is less than 86400 (one day)"},
		{"host bits", headNoTrust + "trusted_networks = [\"10.1.2.3/8\"]\n",
			`relay.toml:5: listener[0].trusted_networks[0] = "10.1.2.3/8" has bits set beyond its length /8: it means "10.0.0.0/8"`},
		{"remote resolver trusted", head + "[dns]\nresolver = \"192.0.2.53:53\"\ntrust_ad = true\n",
			`relay.toml:8: dns.trust_ad = true, but dns.resolver "192.0.2.53:53" is not on this host`},
		{"remote resolver not trusted", head + "[dns]\nresolver = \"192.0.2.53:53\"\n",
			`relay.toml:6: dns.trust_ad is false and dns.resolver "192.0.2.53:53" is not on this host, so no answer counts as DNSSEC-validated`},
		{"short queue lifetime", head + "[delivery]\nqueue_lifetime = \"1d\"\n",
			`relay.toml:7: delivery.queue_lifetime = "24h" is less than 4 days`},
		{"delay warning after bounce", head + "[delivery]\ndelay_warning = \"6d\"\n",
			`relay.toml:7: delivery.delay_warning = "144h" is not shorter than delivery.queue_lifetime = "120h"`},
		{"users without auth", head + user,
			"relay.toml:6: user is configured, but no listener offers AUTH"},
		{"per-ip above total", head + "[limits]\nmax_connections = 10\n",
			"relay.toml:6: limits.max_connections_per_ip = 100 is more than limits.max_connections = 10"},
		{"bare hostname", "hostname = \"relay\"\n" + head[strings.Index(head, "\n")+1:],
			`relay.toml:1: hostname = "relay" is not fully qualified`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc), "relay.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0], tt.want) {
				t.Errorf("warnings = %q, want one starting with %q", cfg.Warnings, tt.want)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	doc := `hostname = "relay.example.com"
data_dir = "/srv/relay"

[dns]
resolver = "[::1]:5353"
trust_ad = true

[[listener]]
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.1", "::1", "192.0.2.0/24", "2001:db8::/32"]

[[listener]]
address = ":465"
tls = "implicit"
auth = "required"

[tls]
cert_file = "/etc/relay/cert.pem"
key_file = "/etc/relay/key.pem"

[[user]]
name = "mailraven"
password_hash = "` + testHash + `"

[limits]
max_message_size = "10MB"
max_recipients = 50

[delivery]
queue_lifetime = "5d"
delay_warning = "0s"
first_retry = "1m30s"
mta_sts = false

[[route]]
domain = "Partner.Example"
security = "dane-only"
next_hop = "[2001:db8::25]:2525"

[[route]]
domain = "other.example"

[inbound]
address = ":443"
acme = true
acme_email = "postmaster@example.org"

[[inbound.mta_sts]]
domain = "Example.org"
mode = "enforce"
mx = ["mail.example.org", "*.mx.example.org"]

[admin]
socket = "/run/relay/admin.sock"
`
	cfg, err := Parse([]byte(doc), "relay.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %q", cfg.Warnings)
	}
	want := &Config{
		Hostname: "relay.example.com",
		DataDir:  "/srv/relay",
		Log:      Log{Level: "info", Format: "text"},
		DNS:      DNS{Resolver: "[::1]:5353", TrustAD: true, Timeout: Duration{5 * time.Second}, CheckDNSSEC: true},
		Listeners: []Listener{
			{Address: "127.0.0.1:2525", TLS: "none", Auth: "none", TrustedNetworks: []netip.Prefix{
				netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"),
				netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"),
			}},
			{Address: ":465", TLS: "implicit", Auth: "required"},
		},
		TLS:   TLSFiles{CertFile: "/etc/relay/cert.pem", KeyFile: "/etc/relay/key.pem"},
		Users: []User{{Name: "mailraven", PasswordHash: testHash}},
		Limits: Limits{
			MaxMessageSize:      10_000_000,
			MaxRecipients:       50,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 100,
			MaxLineLength:       8192,
			CommandTimeout:      Duration{5 * time.Minute},
			DataTimeout:         Duration{10 * time.Minute},
		},
		Delivery: Delivery{
			Workers:            64,
			PerHostConnections: 8,
			QueueLifetime:      Duration{120 * time.Hour},
			FirstRetry:         Duration{90 * time.Second},
			MaxRetryInterval:   Duration{4 * time.Hour},
			DelayWarning:       Duration{0},
			ConnectTimeout:     Duration{30 * time.Second},
			DANE:               true,
			MTASTS:             false,
		},
		Routes: []Route{
			{Domain: "partner.example", Security: "dane-only", NextHop: "[2001:db8::25]:2525"},
			{Domain: "other.example"},
		},
		Inbound: &Inbound{
			Address:   ":443",
			ACME:      true,
			ACMEEmail: "postmaster@example.org",
			MTASTS: []MTASTSPolicy{
				{Domain: "example.org", Mode: "enforce", MaxAge: 604800, MX: []string{"mail.example.org", "*.mx.example.org"}},
			},
			TLSRPT: TLSRPT{Path: "/report/tlsrpt", MaxBody: 5 << 20},
		},
		Admin: Admin{Socket: "/run/relay/admin.sock"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", cfg, want)
		if !reflect.DeepEqual(cfg.Inbound, want.Inbound) {
			t.Errorf("Inbound =\n%+v\nwant\n%+v", cfg.Inbound, want.Inbound)
		}
	}
	if got := cfg.AdminSocketPath(); got != "/run/relay/admin.sock" {
		t.Errorf("AdminSocketPath = %q", got)
	}
	if got, err := cfg.DNSResolverAddr(); got != "[::1]:5353" || err != nil {
		t.Errorf("DNSResolverAddr = %q, %v", got, err)
	}
}

func TestParseMinimalGetsDefaults(t *testing.T) {
	cfg, err := Parse([]byte(head), "relay.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := new(Config)
	want.setDefaults()
	want.Hostname = "relay.example.com"
	want.DataDir = "/var/lib/relay"
	want.Listeners = []Listener{{Address: "127.0.0.1:2525", TLS: TLSNone, Auth: AuthNone, TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", cfg, want)
	}
	if cfg.Inbound != nil {
		t.Errorf("Inbound = %+v, want nil without [inbound]", cfg.Inbound)
	}
	if got := cfg.AdminSocketPath(); got != "/var/lib/relay/relay.sock" {
		t.Errorf("AdminSocketPath = %q, want the socket inside data_dir", got)
	}
}

func TestParseEmptyHostnameUsesSystemName(t *testing.T) {
	cfg, err := Parse([]byte(head[strings.Index(head, "\n")+1:]), "relay.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Hostname == "" || checkDomain(cfg.Hostname) != nil {
		t.Errorf("Hostname = %q, want a valid name", cfg.Hostname)
	}
	if h, err := os.Hostname(); err == nil && checkDomain(h) == nil && cfg.Hostname != h {
		t.Errorf("Hostname = %q, want the system's %q", cfg.Hostname, h)
	}
}

func TestParseCRLF(t *testing.T) {
	crlf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
	doc := head + "tls = \"none\"\n# comment\n[delivery]\nfirst_retry = \"2m\"\n"
	cfg, err := Parse(crlf(doc), "relay.toml")
	if err != nil {
		t.Fatalf("Parse CRLF: %v", err)
	}
	if cfg.Delivery.FirstRetry.Duration != 2*time.Minute || cfg.Listeners[0].Address != "127.0.0.1:2525" {
		t.Errorf("CRLF file parsed to %+v", cfg)
	}
	// A UTF-8 byte order mark, as Windows editors write, is accepted too.
	if _, err := Parse(append([]byte("\xef\xbb\xbf"), crlf(doc)...), "relay.toml"); err != nil {
		t.Errorf("Parse with BOM: %v", err)
	}
	_, err = Parse(crlf(head+"[delivery]\nworkers = -1\n"), "relay.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "relay.toml:7: delivery.workers = -1 must be positive") {
		t.Errorf("CRLF error = %v, want it on line 7", err)
	}
	_, err = Parse(crlf(head+"tls = \"starttls\n"), "relay.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "relay.toml:6:") {
		t.Errorf("CRLF syntax error = %v, want it on line 6", err)
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.Hostname == "" {
		t.Error("Hostname is empty, want the system host name or localhost")
	}
	if cfg.DataDir != "./relay-data" {
		t.Errorf("DataDir = %q", cfg.DataDir)
	}
	wantListeners := []Listener{{
		Address: "127.0.0.1:2525", TLS: TLSNone, Auth: AuthNone,
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	}}
	if !reflect.DeepEqual(cfg.Listeners, wantListeners) {
		t.Errorf("Listeners = %+v, want %+v", cfg.Listeners, wantListeners)
	}
	if cfg.Inbound != nil || len(cfg.Users) != 0 || len(cfg.Routes) != 0 || cfg.Metrics.Address != "" {
		t.Errorf("want no inbound, users, routes or metrics: %+v", cfg)
	}
	if cfg.DNS.Resolver != "" || cfg.DNS.TrustAD {
		t.Errorf("DNS = %+v, want the system resolver, untrusted", cfg.DNS)
	}
	if cfg.Admin.Socket != "relay.sock" || cfg.AdminSocketPath() != filepath.Join("relay-data", "relay.sock") {
		t.Errorf("admin socket %q at %q", cfg.Admin.Socket, cfg.AdminSocketPath())
	}
	d := new(Config)
	d.setDefaults()
	// The embedded default holds accepted mail: on a laptop nothing leaves
	// the machine until the operator releases it.
	if !cfg.Delivery.Hold {
		t.Error("the embedded default does not hold accepted mail")
	}
	d.Delivery.Hold = true
	if cfg.Delivery != d.Delivery || cfg.Limits != d.Limits || cfg.Log != d.Log {
		t.Errorf("delivery, limits or log differ from the defaults: %+v", cfg)
	}
	for _, w := range cfg.Warnings {
		if !strings.Contains(w, "hostname") {
			t.Errorf("unexpected warning: %s", w)
		}
	}
	// DefaultTOML is a copy: changing it does not change Default.
	b := DefaultTOML()
	clear(b)
	if Default().DataDir != "./relay-data" {
		t.Error("DefaultTOML returned the embedded bytes themselves")
	}
}

// examplePath is relay.toml.example at the top of the repository.
const examplePath = "../../relay.toml.example"

func TestExampleIsValid(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings:\n%s", strings.Join(cfg.Warnings, "\n"))
	}
	if cfg.Inbound == nil || cfg.Inbound.ReportSMTP == nil || len(cfg.Inbound.MTASTS) == 0 || len(cfg.Inbound.Certs) == 0 {
		t.Errorf("the example should show every inbound table: %+v", cfg.Inbound)
	}
}

// TestExampleHasEveryKey proves that relay.toml.example sets every key the
// decoder knows, each with a comment on its line or the line above.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	p := newParser(data, examplePath)
	p.index()
	inFile := make(map[string]int) // key path without indices → first line
	for path, line := range p.lines {
		k := stripIndices(path)
		if l, ok := inFile[k]; !ok || line < l {
			inFile[k] = line
		}
	}
	keys := schema()
	if len(keys) < 60 {
		t.Fatalf("schema has only %d keys; is the reflection walk broken?", len(keys))
	}
	isTablePath := func(path string) bool {
		return slices.ContainsFunc(keys, func(k schemaKey) bool { return strings.HasPrefix(k.path, path+".") })
	}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	for _, k := range keys {
		line, ok := inFile[k.path]
		if !ok {
			t.Errorf("%s: key %s (in %s) is missing; document it", examplePath, k.path, k.table)
			continue
		}
		if isTablePath(k.path) {
			continue
		}
		if !strings.Contains(lines[line-1], "#") && !strings.HasPrefix(strings.TrimSpace(lines[line-2]), "#") {
			t.Errorf("%s:%d: key %s has no comment on its line or the line above", examplePath, line, k.path)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(path, []byte(head+"tls = \"tsl\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":6: listener[0].tls = \"tsl\"") {
		t.Errorf("Load error = %v, want it to start with the path and line", err)
	}
	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("Load of a missing file = %v, want ErrNotExist naming the file", err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"90s", 90 * time.Second, ""},
		{"5m", 5 * time.Minute, ""},
		{"4h30m", 4*time.Hour + 30*time.Minute, ""},
		{"5d", 120 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1.5d", 36 * time.Hour, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{"-1h", -time.Hour, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"", 0, "empty"},
		{"5", 0, "5 has no unit"},
		{"5min", 0, `unknown unit "min"`},
		{"d", 0, "expected a number"},
		{"1..5h", 0, "bad number"},
		{"200000000d", 0, "too long"},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Duration(%q): err %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || d.Duration != tt.want):
			t.Errorf("Duration(%q) = %v, %v, want %v", tt.in, d.Duration, err, tt.want)
		}
	}
	for d, want := range map[time.Duration]string{120 * time.Hour: "120h", 5 * time.Minute: "5m", 90 * time.Second: "1m30s", 0: "0s", 90 * time.Minute: "1h30m"} {
		b, _ := Duration{d}.MarshalText()
		if string(b) != want {
			t.Errorf("MarshalText(%v) = %s, want %s", d, b, want)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string
	}{
		{"10485760", 10485760, ""},
		{"512KiB", 512 << 10, ""},
		{"50MiB", 50 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"50MB", 50_000_000, ""},
		{"1kb", 1000, ""},
		{"50 MiB", 50 << 20, ""},
		{"1.5KiB", 1536, ""},
		{"100B", 100, ""},
		{"1_000", 1000, ""},
		{"", 0, "no number"},
		{"MiB", 0, "no number"},
		{"5M", 0, `unknown unit "M"`},
		{"-5MiB", 0, "negative"},
		{"10000000TiB", 0, "too large"},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Size(%q): err %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || s != tt.want):
			t.Errorf("Size(%q) = %d, %v, want %d", tt.in, s, err, tt.want)
		}
	}
	for s, want := range map[Size]string{50 * MiB: "50MiB", 5 * GiB: "5GiB", 1536: "1536", 0: "0", 50_000_000: "50000000"} {
		if s.String() != want {
			t.Errorf("Size(%d).String() = %s, want %s", int64(s), s.String(), want)
		}
	}
}

func TestFirstNameserver(t *testing.T) {
	tests := []struct {
		conf, want string
	}{
		{"nameserver 127.0.0.53\noptions edns0 trust-ad\n", "127.0.0.53:53"},
		{"# comment\nsearch example.org\nnameserver ::1\nnameserver 192.0.2.1\n", "[::1]:53"},
		{"nameserver fe80::1%eth0\n", "[fe80::1%eth0]:53"},
		{"nameserver bogus\nnameserver 192.0.2.1\n", "192.0.2.1:53"},
		{"search example.org\n", ""},
	}
	for _, tt := range tests {
		got, err := firstNameserver(strings.NewReader(tt.conf))
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("firstNameserver(%q) = %q, %v, want %q", tt.conf, got, err, tt.want)
		}
	}
}

func TestCheckDomain(t *testing.T) {
	valid := []string{"localhost", "relay.example.com", "xn--bcher-kva.example", "a-b.c0", "EXAMPLE.ORG"}
	invalid := []string{"", "example.org.", "a..b", "-a.example", "a-.example", "a_b.example", "bücher.example",
		"192.0.2.1", "::1", "example.123", strings.Repeat("a", 64) + ".example", strings.Repeat("a.", 127) + "aa"}
	for _, d := range valid {
		if err := checkDomain(d); err != nil {
			t.Errorf("checkDomain(%q) = %v, want nil", d, err)
		}
	}
	for _, d := range invalid {
		if err := checkDomain(d); err == nil {
			t.Errorf("checkDomain(%q) = nil, want an error", d)
		}
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"address", "tls", "auth", "trusted_networks"}
	tests := map[string]string{
		"adress": "address", "Address": "address", "tsl": "tls", "trusted": "trusted_networks",
		"trusted-networks": "trusted_networks", "ath": "auth", "colour": "", "x": "", "mode": "",
	}
	for key, want := range tests {
		if got := suggest(key, names); got != want {
			t.Errorf("suggest(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestDNSResolverAddrFromSystem(t *testing.T) {
	cfg := Default()
	addr, err := cfg.DNSResolverAddr()
	if _, statErr := os.Stat("/etc/resolv.conf"); statErr != nil {
		if err == nil {
			t.Errorf("DNSResolverAddr = %q without /etc/resolv.conf, want an error", addr)
		}
		return
	}
	if err != nil {
		t.Skipf("this machine's /etc/resolv.conf has no nameserver: %v", err)
	}
	if _, err := netip.ParseAddrPort(addr); err != nil && !strings.Contains(addr, "%") {
		t.Errorf("DNSResolverAddr = %q, want an address and port: %v", addr, err)
	}
}

// TestMarshalRoundTrip proves that the toml tags and the MarshalText methods
// agree with Parse, so a configuration can be printed and read back.
func TestMarshalRoundTrip(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := toml.Marshal(cfg)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := Parse(out, "marshaled.toml")
	if err != nil {
		t.Fatalf("Parse of marshaled config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip changed the config:\n%+v\nwant\n%+v\nTOML:\n%s", back, cfg, out)
	}
}
