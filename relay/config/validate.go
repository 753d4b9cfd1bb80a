package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Limits from the RFCs.
const (
	minLineLength = 1000     // RFC 5321 §4.5.3.1.6: text line, CRLF included
	maxMaxAge     = 31557600 // RFC 8461 §3.2: max_age at most about one year
	minMaxAge     = 86400    // RFC 8461 §3.2 recommends weeks; below a day is short
	minLifetime   = 4 * 24 * time.Hour
	maxSocketPath = 104 // sun_path is 104 bytes on BSDs and macOS, 108 on Linux
)

// validate checks the decoded configuration, recording every problem.
// Defaults are in place for absent keys; values that could not be decoded
// are defaults too, and failf drops the errors about them.
func (p *parser) validate(c *Config) {
	p.validateTop(c)
	p.validateDNS(c)
	p.validateListeners(c)
	p.validateUsers(c)
	p.validateLimits(c)
	p.validateDelivery(c)
	p.validateRoutes(c)
	if c.Inbound != nil {
		p.validateInbound(c.Inbound)
	}
	p.validateAddresses(c)
}

func (p *parser) validateTop(c *Config) {
	if c.Hostname == "" {
		c.Hostname = p.systemHostname()
	} else if err := checkDomain(c.Hostname); err != nil {
		p.failf("hostname", "= %q is not a valid host name (%v): use the relay's fully qualified DNS name, such as \"relay.example.com\"", c.Hostname, err)
	} else if !strings.Contains(c.Hostname, ".") {
		p.warnf("hostname", "= %q is not fully qualified: receiving servers may reject EHLO with it; use the relay's DNS name, such as \"relay.example.com\"", c.Hostname)
	}
	if c.DataDir == "" {
		p.failf("data_dir", "is missing: set the directory for the queue, spool, caches and reports, such as \"/var/lib/relay\"")
	}
	p.checkEnum("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.checkEnum("log.format", c.Log.Format, "text", "json")
	if c.Admin.Socket == "" {
		p.failf("admin.socket", "is empty: set the admin socket path, such as \"relay.sock\" (relative paths are inside data_dir)")
	} else if path := c.AdminSocketPath(); len(path) > maxSocketPath {
		p.warnf("admin.socket", "resolves to %q, %d bytes long: unix socket paths longer than %d bytes fail on some systems; use a shorter path", path, len(path), maxSocketPath)
	}
	if c.TLS.CertFile != "" && c.TLS.KeyFile == "" {
		p.failf("tls.cert_file", "is set but tls.key_file is not: set key_file to the certificate's private key (PEM)")
	}
	if c.TLS.KeyFile != "" && c.TLS.CertFile == "" {
		p.failf("tls.key_file", "is set but tls.cert_file is not: set cert_file to the certificate chain (PEM)")
	}
}

// systemHostname returns the machine's host name for an empty hostname key,
// or "localhost" (with a warning) when it is unusable.
func (p *parser) systemHostname() string {
	h, err := os.Hostname()
	if err == nil {
		err = checkDomain(h)
	}
	if err != nil {
		p.warnf("hostname", "is empty and the system host name %q cannot be used (%v): using \"localhost\"; set hostname to the relay's DNS name", h, err)
		return "localhost"
	}
	return h
}

func (p *parser) validateDNS(c *Config) {
	if c.DNS.Timeout.Duration <= 0 {
		p.failf("dns.timeout", "= %q must be positive, such as \"5s\"", c.DNS.Timeout)
	}
	if c.DNS.Resolver == "" {
		return
	}
	host, port, err := net.SplitHostPort(c.DNS.Resolver)
	if err != nil {
		if _, aerr := netip.ParseAddr(strings.Trim(c.DNS.Resolver, "[]")); aerr == nil {
			p.failf("dns.resolver", "= %q has no port: write %q", c.DNS.Resolver, net.JoinHostPort(strings.Trim(c.DNS.Resolver, "[]"), "53"))
		} else {
			p.failf("dns.resolver", "= %q is not an address and port (%v): write the resolver's IP address and port, such as \"127.0.0.1:53\" or \"[::1]:53\"", c.DNS.Resolver, unwrapAddrErr(err))
		}
		return
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		p.failf("dns.resolver", "= %q does not start with an IP address: the resolver's name cannot be looked up without a resolver; write its IP address and port, such as \"127.0.0.1:53\"", c.DNS.Resolver)
		return
	}
	if err := checkPort(port, false); err != nil {
		p.failf("dns.resolver", "= %q has a bad port (%v): DNS uses port 53, such as \"127.0.0.1:53\"", c.DNS.Resolver, err)
		return
	}
	if c.DNS.TrustAD && !addr.IsLoopback() {
		p.warnf("dns.trust_ad", "= true, but dns.resolver %q is not on this host: an attacker on the network path can forge the AD bit (RFC 7672 §2.1); use a validating resolver on a loopback address", c.DNS.Resolver)
	}
	// DNS03: the AD bit of a loopback resolver is trusted; any other
	// resolver's only with trust_ad = true.
	if !c.DNS.TrustAD && !addr.IsLoopback() && c.Delivery.DANE {
		p.warnf("dns.trust_ad", "is false and dns.resolver %q is not on this host, so no answer counts as DNSSEC-validated and DANE never applies: run a validating resolver on a loopback address, or set trust_ad = true if the path to that resolver is protected", c.DNS.Resolver)
	}
}

func (p *parser) validateListeners(c *Config) {
	if len(c.Listeners) == 0 {
		p.failf("listener", "is missing: add at least one [[listener]] table, such as address = \"127.0.0.1:2525\" with trusted_networks = [\"127.0.0.0/8\"]")
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		path := indexPath("listener", i)
		p.checkListenAddr(path+".address", l.Address, "127.0.0.1:2525")
		for j, pfx := range l.TrustedNetworks {
			p.checkTrusted(indexPath(path+".trusted_networks", j), pfx)
		}
		okTLS := p.checkEnum(path+".tls", l.TLS, TLSNone, TLSStartTLS, TLSImplicit)
		okAuth := p.checkEnum(path+".auth", l.Auth, AuthNone, AuthOptional, AuthRequired)
		if !okTLS || !okAuth || !p.decoded(path+".tls", path+".auth") {
			continue
		}
		if l.Auth != AuthNone && l.TLS == TLSNone {
			p.failf(path+".auth", "= %q needs tls = \"starttls\" or \"implicit\": AUTH is only offered over TLS, so passwords never cross the network in clear", l.Auth)
		}
		if l.TLS != TLSNone && c.TLS.CertFile == "" && c.TLS.KeyFile == "" && p.decoded("tls") {
			p.failf(path+".tls", "= %q needs a certificate: set cert_file and key_file in the [tls] table", l.TLS)
		}
		if l.Auth == AuthNone && len(l.TrustedNetworks) == 0 && p.decoded(path+".trusted_networks") {
			p.failf(path+".trusted_networks", "is empty and auth = \"none\": the listener could accept mail from nobody; add the networks of your mail servers, such as [\"127.0.0.0/8\"], or offer AUTH with auth = \"required\", TLS and a [[user]]")
		}
		if l.Auth != AuthNone && len(c.Users) == 0 && p.decoded("user") {
			p.failf(path+".auth", "= %q but no [[user]] is configured: nobody could log in; add a [[user]] with a password_hash made by `relayctl user hash`, or set auth = \"none\"", l.Auth)
		}
	}
}

// checkTrusted rejects a trusted network so wide that the relay would be an
// open relay.
func (p *parser) checkTrusted(path string, pfx netip.Prefix) {
	family, minBits := "IPv4", 8
	switch {
	case pfx.Addr().Is4In6():
		minBits = 96 + 8
	case pfx.Addr().Is6():
		family, minBits = "IPv6", 16
	}
	if pfx.Bits() >= minBits {
		return
	}
	what := fmt.Sprintf("is wider than /%d", minBits)
	if pfx.Bits() == 0 {
		what = "covers every " + family + " address"
	}
	p.failf(path, "= %q %s: clients there may relay without AUTH, so the relay would be an open relay, passing anyone's mail to anywhere; list only the networks of your own mail servers, such as \"192.0.2.0/24\", and use AUTH for the rest", pfx.String(), what)
}

func (p *parser) validateUsers(c *Config) {
	seen := make(map[string]int)
	for i, u := range c.Users {
		path := indexPath("user", i)
		if u.Name == "" {
			p.failf(path+".name", "is missing: set the AUTH user name")
		} else if j, dup := seen[u.Name]; dup {
			p.failf(path+".name", "= %q is already the name of user[%d]: user names must be unique", u.Name, j)
		} else {
			seen[u.Name] = i
		}
		// The value is not shown: it may be a password pasted by mistake.
		switch _, err := bcrypt.Cost([]byte(u.PasswordHash)); {
		case u.PasswordHash == "":
			p.failf(path+".password_hash", "is missing: run `relayctl user hash` and paste the hash it prints")
		case err != nil:
			p.failf(path+".password_hash", "is not a bcrypt hash (one starts with \"$2a$\", \"$2b$\" or \"$2y$\" and is 60 characters long): run `relayctl user hash` and paste the hash it prints; never put the password itself here")
		}
	}
	if len(c.Users) > 0 && !slices.ContainsFunc(c.Listeners, func(l Listener) bool { return l.Auth != AuthNone }) && p.decoded("listener") {
		p.warnf("user", "is configured, but no listener offers AUTH: set auth = \"required\" or \"optional\" on a listener with TLS, or remove the users")
	}
}

func (p *parser) validateLimits(c *Config) {
	l := c.Limits
	p.checkPositive("limits.max_message_size", int64(l.MaxMessageSize), `"50MiB"`)
	p.checkPositive("limits.max_recipients", int64(l.MaxRecipients), "1000")
	p.checkPositive("limits.max_connections", int64(l.MaxConnections), "1000")
	p.checkPositive("limits.max_connections_per_ip", int64(l.MaxConnectionsPerIP), "100")
	p.checkPositiveDuration("limits.command_timeout", l.CommandTimeout, "5m")
	p.checkPositiveDuration("limits.data_timeout", l.DataTimeout, "10m")
	if l.MaxLineLength < minLineLength {
		p.failf("limits.max_line_length", "= %d is below %d: SMTP allows lines of up to 1000 bytes including CRLF (RFC 5321 §4.5.3.1.6), so shorter limits reject valid mail; the default is 8192", l.MaxLineLength, minLineLength)
	}
	if l.MaxConnections > 0 && l.MaxConnectionsPerIP > l.MaxConnections && p.decoded("limits.max_connections") {
		p.warnf("limits.max_connections_per_ip", "= %d is more than limits.max_connections = %d, so it never applies", l.MaxConnectionsPerIP, l.MaxConnections)
	}
}

func (p *parser) validateDelivery(c *Config) {
	d := c.Delivery
	p.checkPositive("delivery.workers", int64(d.Workers), "64")
	p.checkPositive("delivery.per_host_connections", int64(d.PerHostConnections), "8")
	okLife := p.checkPositiveDuration("delivery.queue_lifetime", d.QueueLifetime, "120h")
	okFirst := p.checkPositiveDuration("delivery.first_retry", d.FirstRetry, "5m")
	okMax := p.checkPositiveDuration("delivery.max_retry_interval", d.MaxRetryInterval, "4h")
	p.checkPositiveDuration("delivery.connect_timeout", d.ConnectTimeout, "30s")
	if d.DelayWarning.Duration < 0 {
		p.failf("delivery.delay_warning", "= %q is negative: set a delay such as \"4h\", or \"0s\" to send no delay warnings", d.DelayWarning)
	}
	both := func(a string) bool { return p.decoded(a, "delivery.first_retry") }
	if okLife && okFirst && d.QueueLifetime.Duration < d.FirstRetry.Duration && both("delivery.queue_lifetime") {
		p.failf("delivery.queue_lifetime", "= %q is shorter than delivery.first_retry = %q: messages would bounce before their first retry; make queue_lifetime longer (the default is \"120h\", 5 days)", d.QueueLifetime, d.FirstRetry)
	} else if okLife && d.QueueLifetime.Duration < minLifetime {
		p.warnf("delivery.queue_lifetime", "= %q is less than 4 days: RFC 5321 §4.5.4.1 asks to keep retrying for at least 4-5 days", d.QueueLifetime)
	}
	if okMax && okFirst && d.MaxRetryInterval.Duration < d.FirstRetry.Duration && both("delivery.max_retry_interval") {
		p.failf("delivery.max_retry_interval", "= %q is shorter than delivery.first_retry = %q: the backoff cannot start above its cap; make max_retry_interval at least first_retry", d.MaxRetryInterval, d.FirstRetry)
	}
	if okLife && d.DelayWarning.Duration >= d.QueueLifetime.Duration && p.decoded("delivery.queue_lifetime") {
		p.warnf("delivery.delay_warning", "= %q is not shorter than delivery.queue_lifetime = %q: no delay warning will ever be sent; use \"0s\" to say so, or a shorter delay", d.DelayWarning, d.QueueLifetime)
	}
}

func (p *parser) validateRoutes(c *Config) {
	seen := make(map[string]int)
	for i := range c.Routes {
		r := &c.Routes[i]
		path := indexPath("route", i)
		r.Domain = strings.ToLower(r.Domain)
		switch err := checkDomain(r.Domain); {
		case r.Domain == "":
			p.failf(path+".domain", "is missing: set the recipient domain this route applies to, such as \"partner.example\"")
		case err != nil:
			p.failf(path+".domain", "= %q is not a valid domain name (%v)", r.Domain, err)
		default:
			if j, dup := seen[r.Domain]; dup {
				p.failf(path+".domain", "= %q already has a route, route[%d]: merge the two [[route]] tables", r.Domain, j)
			} else {
				seen[r.Domain] = i
			}
		}
		if r.Security != SecurityAuto {
			p.checkEnum(path+".security", r.Security, SecurityDANEOnly, SecurityMTASTSOrDANE, SecurityTLSVerify, SecurityTLS, SecurityNone)
		}
		if r.NextHop != "" {
			if err := checkHostPort(r.NextHop); err != nil {
				p.failf(path+".next_hop", "= %q is not a host or host:port (%v): write a name or address, optionally with a port, such as \"smtp.partner.example\" or \"[2001:db8::1]:2525\"", r.NextHop, err)
			}
		}
	}
}

func (p *parser) validateInbound(in *Inbound) {
	p.checkListenAddr("inbound.address", in.Address, ":443")

	if in.CertFile != "" && in.KeyFile == "" {
		p.failf("inbound.cert_file", "is set but inbound.key_file is not: set key_file to the certificate's private key (PEM)")
	}
	if in.KeyFile != "" && in.CertFile == "" {
		p.failf("inbound.key_file", "is set but inbound.cert_file is not: set cert_file to the certificate chain (PEM)")
	}
	for i, c := range in.Certs {
		path := indexPath("inbound.cert", i)
		if c.CertFile == "" {
			p.failf(path+".cert_file", "is missing: each [[inbound.cert]] needs cert_file and key_file")
		}
		if c.KeyFile == "" {
			p.failf(path+".key_file", "is missing: each [[inbound.cert]] needs cert_file and key_file")
		}
	}
	if in.CertFile == "" && in.KeyFile == "" && len(in.Certs) == 0 && !in.ACME && p.decoded("inbound.acme", "inbound.cert") {
		p.failf("inbound", "has no certificate: set cert_file and key_file (more pairs in [[inbound.cert]] tables), or acme = true with acme_email")
	}
	if in.ACME {
		if in.ACMEEmail == "" {
			p.failf("inbound.acme_email", "is missing: acme = true needs a contact address for the ACME account, such as \"postmaster@example.org\"")
		}
	}
	if in.ACMEEmail != "" {
		if err := checkMailbox(in.ACMEEmail); err != nil {
			p.failf("inbound.acme_email", "= %q is not an email address (%v): write a plain address, such as \"postmaster@example.org\"", in.ACMEEmail, err)
		}
	}
	if in.ACMEDirectory != "" {
		if u, err := url.Parse(in.ACMEDirectory); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.failf("inbound.acme_directory", "= %q is not an http(s) URL: write the ACME directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\", or leave it empty for Let's Encrypt", in.ACMEDirectory)
		}
	}

	p.validatePolicies(in.MTASTS)

	if !strings.HasPrefix(in.TLSRPT.Path, "/") || strings.ContainsAny(in.TLSRPT.Path, "?# \t") {
		p.failf("inbound.tls_rpt.path", "= %q is not a URL path: it must start with \"/\" and have no query, such as \"/report/tlsrpt\"", in.TLSRPT.Path)
	}
	p.checkPositive("inbound.tls_rpt.max_body", int64(in.TLSRPT.MaxBody), `"5MiB"`)

	if rs := in.ReportSMTP; rs != nil {
		p.checkListenAddr("inbound.report_smtp.address", rs.Address, ":25")
		if len(rs.Addresses) == 0 {
			p.failf("inbound.report_smtp.addresses", "is empty: list the mailboxes your rua=mailto: records name, such as [\"tlsrpt@example.org\"], or remove [inbound.report_smtp]")
		}
		for i, a := range rs.Addresses {
			if err := checkMailbox(a); err != nil {
				p.failf(indexPath("inbound.report_smtp.addresses", i), "= %q is not an email address (%v): write a plain address, such as \"tlsrpt@example.org\"", a, err)
			}
		}
	}
}

func (p *parser) validatePolicies(policies []MTASTSPolicy) {
	seen := make(map[string]int)
	for i := range policies {
		pol := &policies[i]
		path := indexPath("inbound.mta_sts", i)
		pol.Domain = strings.ToLower(pol.Domain)
		switch err := checkDomain(pol.Domain); {
		case pol.Domain == "":
			p.failf(path+".domain", "is missing: set the domain whose policy this is, such as \"example.org\"")
		case err != nil:
			p.failf(path+".domain", "= %q is not a valid domain name (%v)", pol.Domain, err)
		default:
			if j, dup := seen[pol.Domain]; dup {
				p.failf(path+".domain", "= %q already has a policy, inbound.mta_sts[%d]: a domain has one MTA-STS policy; remove one of them", pol.Domain, j)
			} else {
				seen[pol.Domain] = i
			}
		}
		okMode := true
		if pol.Mode == "" {
			okMode = false
			p.failf(path+".mode", "is missing: set \"testing\" to start, \"enforce\" once TLS reports show no failures, or \"none\" to withdraw the policy")
		} else {
			okMode = p.checkEnum(path+".mode", pol.Mode, ModeEnforce, ModeTesting, ModeNone)
		}
		switch {
		case pol.MaxAge > maxMaxAge:
			p.failf(path+".max_age", "= %d is more than %d seconds, the most RFC 8461 §3.2 allows: use at most %d (one year); 604800 (one week) is common", pol.MaxAge, maxMaxAge, maxMaxAge)
		case pol.MaxAge < 0:
			p.failf(path+".max_age", "= %d is negative: set the policy lifetime in seconds, such as 604800 (one week)", pol.MaxAge)
		case pol.MaxAge < minMaxAge:
			p.warnf(path+".max_age", "= %d is less than 86400 (one day): senders would refetch the policy often and lose it quickly when the policy host is unreachable; RFC 8461 §3.2 recommends weeks, such as 604800", pol.MaxAge)
		}
		if okMode && pol.Mode != ModeNone && len(pol.MX) == 0 && p.decoded(path+".mode", path+".mx") {
			p.failf(path+".mx", "is empty but mode = %q: list the MX host names the policy allows, such as [\"mail.%s\"] or [\"*.%s\"]", pol.Mode, orExample(pol.Domain), orExample(pol.Domain))
		}
		for j, mx := range pol.MX {
			if err := checkMXPattern(mx); err != nil {
				p.failf(indexPath(path+".mx", j), "= %q is not an MX host pattern (%v): write a host name, such as \"mail.example.org\", or \"*.\" and a domain, such as \"*.example.org\"", mx, err)
			}
		}
	}
}

func orExample(domain string) string {
	if domain == "" {
		return "example.org"
	}
	return domain
}

// validateAddresses checks that no two listeners of any kind would listen on
// the same address, and the metrics address.
func (p *parser) validateAddresses(c *Config) {
	type listen struct{ path, addr string }
	var all []listen
	for i, l := range c.Listeners {
		all = append(all, listen{indexPath("listener", i) + ".address", l.Address})
	}
	if in := c.Inbound; in != nil {
		all = append(all, listen{"inbound.address", in.Address})
		if in.ReportSMTP != nil {
			all = append(all, listen{"inbound.report_smtp.address", in.ReportSMTP.Address})
		}
	}
	if c.Metrics.Address != "" {
		if p.checkListenAddr("metrics.address", c.Metrics.Address, "127.0.0.1:9109") {
			all = append(all, listen{"metrics.address", c.Metrics.Address})
		}
	}
	for i, a := range all {
		for _, b := range all[:i] {
			if !p.decoded(a.path, b.path) {
				continue
			}
			if port, ok := addrConflict(a.addr, b.addr); ok {
				p.failf(a.path, "= %q conflicts with %s = %q: both listen on port %s; give each its own address or port", a.addr, b.path, b.addr, port)
				break
			}
		}
	}
}

// addrConflict reports whether listening on a and on b would collide: the
// same port, and the same host or a wildcard host on either side.
func addrConflict(a, b string) (port string, ok bool) {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return "", false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil || pa != pb || pa == "0" {
		return "", false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	norm := func(h string) string {
		if ip, err := netip.ParseAddr(h); err == nil {
			return ip.Unmap().String()
		}
		return strings.ToLower(h)
	}
	return pa, wildcard(ha) || wildcard(hb) || norm(ha) == norm(hb)
}

// checkEnum checks that value is one of allowed and reports whether it is.
func (p *parser) checkEnum(path, value string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	hint := ""
	if s := suggest(value, allowed); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	p.failf(path, "= %q is not allowed: use one of %s%s", value, strings.Join(quoted, ", "), hint)
	return false
}

func (p *parser) checkPositive(path string, n int64, example string) {
	if n <= 0 {
		p.failf(path, "= %d must be positive; the default is %s", n, example)
	}
}

// checkPositiveDuration checks that d is positive and reports whether it is.
func (p *parser) checkPositiveDuration(path string, d Duration, example string) bool {
	if d.Duration <= 0 {
		p.failf(path, "= %q must be positive, such as %q", d, example)
		return false
	}
	return true
}

// checkListenAddr checks a host:port to listen on and reports whether it is
// valid.
func (p *parser) checkListenAddr(path, addr, example string) bool {
	if addr == "" {
		p.failf(path, "is missing: set the address to listen on, such as %q", example)
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		all := ""
		if !strings.HasPrefix(example, ":") {
			all = fmt.Sprintf(", or %q for all interfaces", example[strings.LastIndexByte(example, ':'):])
		}
		p.failf(path, "= %q is not host:port (%v): write an address and port, such as %q%s", addr, unwrapAddrErr(err), example, all)
		return false
	}
	if err := checkPort(port, true); err != nil {
		p.failf(path, "= %q has a bad port (%v): use a number from 1 to 65535, such as %q", addr, err, example)
		return false
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			if err := checkDomain(host); err != nil {
				p.failf(path, "= %q has a bad host (%v): use an IP address, a host name, or nothing for all interfaces", addr, err)
				return false
			}
		}
	}
	return true
}

// unwrapAddrErr returns the reason inside a *net.AddrError.
func unwrapAddrErr(err error) error {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return errors.New(ae.Err)
	}
	return err
}

// checkPort checks a decimal port number; zero is allowed when zeroOK.
func checkPort(port string, zeroOK bool) error {
	n, err := strconv.Atoi(port)
	if err != nil || strconv.Itoa(n) != port {
		return fmt.Errorf("%q is not a number", port)
	}
	if n < 0 || n > 65535 || n == 0 && !zeroOK {
		return fmt.Errorf("%d is out of range", n)
	}
	return nil
}

// checkHostPort checks "host" or "host:port" where host is a domain name or
// an IP address (IPv6 in brackets when a port follows).
func checkHostPort(s string) error {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if err := checkPort(port, false); err != nil {
			return fmt.Errorf("port %w", err)
		}
		host = h
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	return checkDomain(host)
}

// checkDomain checks that name is a syntactically valid domain name in
// ASCII: dot-separated labels of letters, digits and hyphens (RFC 1123
// §2.1), no trailing dot.
func checkDomain(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 253:
		return errors.New("longer than 253 characters")
	case strings.HasSuffix(name, "."):
		return errors.New("remove the trailing dot")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return errors.New("an IP address, not a name")
	}
	labels := strings.Split(name, ".")
	for _, label := range labels {
		switch {
		case label == "":
			return errors.New("empty label between dots")
		case len(label) > 63:
			return fmt.Errorf("label %q is longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, r := range label {
			if r != '-' && !('a' <= r && r <= 'z') && !('A' <= r && r <= 'Z') && !('0' <= r && r <= '9') {
				return fmt.Errorf("%q is not allowed: names have letters, digits, hyphens and dots only; write internationalized names in their xn-- form", r)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("the last label %q is all digits", last)
	}
	return nil
}

// checkMXPattern checks an MTA-STS mx pattern: a domain name, optionally
// with "*." in front (RFC 8461 §3.2, §4.1).
func checkMXPattern(pattern string) error {
	name := strings.TrimPrefix(pattern, "*.")
	if strings.Contains(name, "*") {
		return errors.New(`a wildcard may only be the whole first label, "*."`)
	}
	return checkDomain(name)
}

// checkMailbox checks a plain email address, such as "a@example.org".
func checkMailbox(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "mail: "))
	}
	if a.Name != "" || a.Address != s {
		return errors.New("write the bare address, without a name or angle brackets")
	}
	return nil
}
