// Package config loads and validates relay.toml, the relay's configuration
// file.
//
// Parse decodes a document strictly (unknown keys are errors), applies the
// defaults for absent keys and checks the result. Every problem is reported
// at once, each naming the file, the line, the key path, the offending value,
// what is wrong and what to do about it. Checks never look at the files the
// configuration names or at the network: whether certificate files exist is
// checked when the daemon starts.
package config

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

//go:embed default.toml
var defaultTOML []byte

// Values of Listener.TLS.
const (
	TLSNone     = "none"     // cleartext only; STARTTLS is not offered
	TLSStartTLS = "starttls" // cleartext connection that offers STARTTLS
	TLSImplicit = "implicit" // TLS from the first byte (port 465 style)
)

// Values of Listener.Auth.
const (
	AuthNone     = "none"     // AUTH is not offered; only trusted networks may relay
	AuthOptional = "optional" // AUTH is offered; trusted networks may relay without it
	AuthRequired = "required" // every client must authenticate
)

// Values of Route.Security. The empty string selects the automatic choice
// (DANE, then MTA-STS, then opportunistic TLS).
const (
	SecurityAuto         = ""                // automatic: DANE, MTA-STS, opportunistic TLS
	SecurityDANEOnly     = "dane-only"       // deliver only over DANE-authenticated TLS
	SecurityMTASTSOrDANE = "mta-sts-or-dane" // DANE or an MTA-STS policy must authenticate the host
	SecurityTLSVerify    = "tls-verify"      // TLS with a Web-PKI-valid certificate for the host
	SecurityTLS          = "tls"             // TLS required, certificate not checked
	SecurityNone         = "none"            // no TLS requirement, not even opportunistic checks
)

// Values of MTASTSPolicy.Mode (RFC 8461 §3.2).
const (
	ModeEnforce = "enforce"
	ModeTesting = "testing"
	ModeNone    = "none"
)

// Config is the decoded and validated content of relay.toml. The toml tags
// are the key names of the configuration contract in DESIGN.md.
type Config struct {
	// Hostname is the EHLO name, the Received header's host and the DSN
	// Reporting-MTA. When the file leaves it empty, Parse fills in the
	// machine's host name (or "localhost" when that is unusable).
	Hostname string `toml:"hostname"`
	// DataDir holds the queue, the spool, caches and reports. Required.
	DataDir string `toml:"data_dir"`
	// Log configures the daemon's log output.
	Log Log `toml:"log"`
	// DNS configures the resolver used for MX, TLSA and MTA-STS lookups.
	DNS DNS `toml:"dns"`
	// Listeners are the SMTP intake listeners; there is at least one.
	Listeners []Listener `toml:"listener"`
	// TLS is the certificate for intake STARTTLS and implicit TLS.
	TLS TLSFiles `toml:"tls"`
	// Users are the SMTP AUTH accounts.
	Users []User `toml:"user"`
	// Limits bound what SMTP clients of the intake may do.
	Limits Limits `toml:"limits"`
	// Delivery configures the outbound delivery workers and retry schedule.
	Delivery Delivery `toml:"delivery"`
	// Routes are per-domain overrides of the delivery security or next hop.
	Routes []Route `toml:"route"`
	// Inbound is the HTTPS listener for MTA-STS policies and TLS-RPT
	// reports; nil when the [inbound] table is absent (disabled).
	Inbound *Inbound `toml:"inbound"`
	// Admin configures the admin API socket used by relayctl.
	Admin Admin `toml:"admin"`
	// Metrics configures the optional Prometheus listener.
	Metrics Metrics `toml:"metrics"`

	// Warnings are non-fatal problems found by Parse, one per entry, in the
	// same "file:line: message" form as errors. They are not a TOML key.
	Warnings []string `toml:"-"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error; default info.
	Level string `toml:"level"`
	// Format is text or json; default text.
	Format string `toml:"format"`
}

// DNS configures the resolver.
type DNS struct {
	// Resolver is the host:port of the resolver. Empty means the first
	// nameserver of /etc/resolv.conf, looked up when it is used (see
	// Config.DNSResolverAddr).
	Resolver string `toml:"resolver"`
	// TrustAD declares a resolver that is not on a loopback address
	// validating: its AD bit is then taken as proof of DNSSEC validation.
	// A resolver on a loopback address (127.0.0.0/8, ::1) is trusted
	// without it (checklist DNS03); any other resolver's answers all count
	// as insecure unless TrustAD is set, and DANE never applies. Default
	// false.
	TrustAD bool `toml:"trust_ad"`
	// Timeout bounds one DNS query; default 5s.
	Timeout Duration `toml:"timeout"`
	// CheckDNSSEC makes the daemon check at start-up whether the resolver
	// validates DNSSEC, by querying a signed name and one whose signatures
	// are broken on purpose, and log what it found; default true. Turn it
	// off where the resolver has no internet access.
	CheckDNSSEC bool `toml:"check_dnssec"`
}

// Listener is one SMTP intake listener.
type Listener struct {
	// Address is the host:port to listen on. Required.
	Address string `toml:"address"`
	// TLS is TLSNone, TLSStartTLS or TLSImplicit; default none.
	TLS string `toml:"tls"`
	// Auth is AuthNone, AuthOptional or AuthRequired; default none.
	Auth string `toml:"auth"`
	// TrustedNetworks may relay without AUTH. The file gives them as
	// strings, "127.0.0.0/8" or a bare address (a /32 or /128); they are
	// stored masked.
	TrustedNetworks []netip.Prefix `toml:"trusted_networks"`
}

// TLSFiles names the certificate used by the intake listeners.
type TLSFiles struct {
	// CertFile is a PEM certificate chain.
	CertFile string `toml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `toml:"key_file"`
}

// User is one SMTP AUTH account.
type User struct {
	// Name is the AUTH user name; unique.
	Name string `toml:"name"`
	// PasswordHash is a bcrypt hash, as printed by `relayctl user hash`.
	PasswordHash string `toml:"password_hash"`
}

// Limits bound the intake.
type Limits struct {
	// MaxMessageSize is advertised with SIZE and enforced; default 50MiB.
	MaxMessageSize Size `toml:"max_message_size"`
	// MaxRecipients per message; default 1000.
	MaxRecipients int `toml:"max_recipients"`
	// MaxConnections is the total of concurrent SMTP connections; default 1000.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP is the concurrent connections from one client
	// address; default 100.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// MaxLineLength in bytes, CRLF included, for command and data lines;
	// default 8192, at least 1000 (RFC 5321 §4.5.3.1.6).
	MaxLineLength int `toml:"max_line_length"`
	// CommandTimeout is how long the intake waits for a command; default 5m.
	CommandTimeout Duration `toml:"command_timeout"`
	// DataTimeout is how long the intake waits for message data; default 10m.
	DataTimeout Duration `toml:"data_timeout"`
}

// Delivery configures outbound delivery.
type Delivery struct {
	// Workers is the number of concurrent deliveries; default 64.
	Workers int `toml:"workers"`
	// PerHostConnections is the number of concurrent connections to one
	// destination host; default 8.
	PerHostConnections int `toml:"per_host_connections"`
	// QueueLifetime is how long a message is retried before it bounces;
	// default 120h (5 days, RFC 5321 §4.5.4.1).
	QueueLifetime Duration `toml:"queue_lifetime"`
	// FirstRetry is the delay after the first failed attempt; default 5m.
	FirstRetry Duration `toml:"first_retry"`
	// MaxRetryInterval caps the backoff between attempts; default 4h.
	MaxRetryInterval Duration `toml:"max_retry_interval"`
	// DelayWarning is when a delay DSN is sent; default 4h, 0 disables.
	DelayWarning Duration `toml:"delay_warning"`
	// ConnectTimeout bounds one TCP connection attempt; default 30s.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// DANE enables DANE (RFC 7672); default true.
	DANE bool `toml:"dane"`
	// MTASTS enables MTA-STS (RFC 8461); default true.
	MTASTS bool `toml:"mta_sts"`
	// Hold puts every accepted message on hold: it is queued but not
	// delivered until an operator releases it (`relayctl queue release`).
	// Default false; the embedded default configuration sets it, so that
	// trying the relay on a laptop sends no mail anywhere.
	Hold bool `toml:"hold"`
}

// Route overrides delivery for one recipient domain.
type Route struct {
	// Domain is the recipient domain, stored lower-case. Required, unique.
	Domain string `toml:"domain"`
	// Security is one of the Security* constants; "" is automatic.
	Security string `toml:"security"`
	// NextHop is a host or host:port used instead of the domain's MX
	// hosts; empty means MX resolution.
	NextHop string `toml:"next_hop"`
}

// Inbound configures the HTTPS listener for MTA-STS and TLS-RPT.
type Inbound struct {
	// Address is the host:port to listen on, normally ":443". Required.
	Address string `toml:"address"`
	// CertFile is a PEM certificate chain; KeyFile its private key.
	CertFile string `toml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `toml:"key_file"`
	// Certs are more certificate pairs ([[inbound.cert]]).
	Certs []CertPair `toml:"cert"`
	// ACME obtains certificates with ACME instead of (or besides) files.
	ACME bool `toml:"acme"`
	// ACMEDirectory is the ACME directory URL; empty means the ACME
	// client's default (Let's Encrypt).
	ACMEDirectory string `toml:"acme_directory"`
	// ACMEEmail is the ACME account contact; required with ACME.
	ACMEEmail string `toml:"acme_email"`
	// MTASTS are the policies served at
	// https://mta-sts.<domain>/.well-known/mta-sts.txt.
	MTASTS []MTASTSPolicy `toml:"mta_sts"`
	// TLSRPT configures the HTTPS TLS-RPT endpoint.
	TLSRPT TLSRPT `toml:"tls_rpt"`
	// ReportSMTP is the optional SMTP mailbox for rua=mailto: reports; nil
	// when [inbound.report_smtp] is absent.
	ReportSMTP *ReportSMTP `toml:"report_smtp"`
}

// CertPair is a certificate chain and its key, both PEM files.
type CertPair struct {
	// CertFile is a PEM certificate chain.
	CertFile string `toml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `toml:"key_file"`
}

// MTASTSPolicy is one MTA-STS policy served for a domain (RFC 8461 §3.2).
type MTASTSPolicy struct {
	// Domain is the policy domain, stored lower-case. Required, unique.
	Domain string `toml:"domain"`
	// Mode is ModeEnforce, ModeTesting or ModeNone. Required.
	Mode string `toml:"mode"`
	// MaxAge in seconds; default 604800 (one week), at most 31557600.
	MaxAge int `toml:"max_age"`
	// MX are the MX host patterns, "mail.example.org" or "*.example.org".
	// Required unless Mode is none.
	MX []string `toml:"mx"`
}

// TLSRPT configures the TLS-RPT receiving endpoint (RFC 8460).
type TLSRPT struct {
	// Path is the URL path reports are POSTed to; default "/report/tlsrpt".
	Path string `toml:"path"`
	// MaxBody caps a report's size; default 5MiB.
	MaxBody Size `toml:"max_body"`
}

// ReportSMTP is an SMTP listener that accepts TLS-RPT reports by mail.
type ReportSMTP struct {
	// Address is the host:port to listen on, for example ":25". Required.
	Address string `toml:"address"`
	// Addresses are the mailboxes accepted as report recipients. At least one.
	Addresses []string `toml:"addresses"`
}

// Admin configures the admin API.
type Admin struct {
	// Socket is the unix socket path; relative paths are inside DataDir.
	// Default "relay.sock".
	Socket string `toml:"socket"`
}

// Metrics configures the Prometheus listener.
type Metrics struct {
	// Address is the host:port of the metrics listener; empty disables it.
	Address string `toml:"address"`
	// Pprof also serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/ on the metrics listener, for profiling the daemon.
	Pprof bool `toml:"pprof"`
}

// defaulter is implemented by the tables that have defaults. The decoder
// calls setDefaults on a value before it decodes the file's keys into it, so
// that defaults apply exactly to the keys that are absent.
type defaulter interface {
	setDefaults()
}

func (c *Config) setDefaults() {
	c.Log = Log{Level: "info", Format: "text"}
	c.DNS.Timeout = Duration{5 * time.Second}
	c.DNS.CheckDNSSEC = true
	c.Limits = Limits{
		MaxMessageSize:      50 * MiB,
		MaxRecipients:       1000,
		MaxConnections:      1000,
		MaxConnectionsPerIP: 100,
		MaxLineLength:       8192,
		CommandTimeout:      Duration{5 * time.Minute},
		DataTimeout:         Duration{10 * time.Minute},
	}
	c.Delivery = Delivery{
		Workers:            64,
		PerHostConnections: 8,
		QueueLifetime:      Duration{120 * time.Hour},
		FirstRetry:         Duration{5 * time.Minute},
		MaxRetryInterval:   Duration{4 * time.Hour},
		DelayWarning:       Duration{4 * time.Hour},
		ConnectTimeout:     Duration{30 * time.Second},
		DANE:               true,
		MTASTS:             true,
	}
	c.Admin.Socket = "relay.sock"
}

func (l *Listener) setDefaults() {
	l.TLS = TLSNone
	l.Auth = AuthNone
}

func (in *Inbound) setDefaults() {
	in.TLSRPT = TLSRPT{Path: "/report/tlsrpt", MaxBody: 5 * MiB}
}

func (p *MTASTSPolicy) setDefaults() {
	p.MaxAge = 604800
}

// Load reads and parses the configuration file at path. Messages in the
// returned error start with path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a configuration document. name is used in
// messages ("relay.toml:12: ..."). When the document has problems the error
// is an *Errors listing all of them; the Config is nil then. Non-fatal
// problems are returned in Config.Warnings.
func Parse(data []byte, name string) (*Config, error) {
	p := newParser(data, name)
	cfg := p.parse()
	if len(p.errs) > 0 {
		return nil, p.errorList()
	}
	cfg.Warnings = p.warnings()
	return cfg, nil
}

// DefaultTOML returns the embedded default file's text: a configuration
// that is safe to run on a laptop (one loopback listener, no AUTH, no
// inbound HTTPS).
func DefaultTOML() []byte {
	return append([]byte(nil), defaultTOML...)
}

// Default returns the embedded default configuration, parsed and validated.
// It panics only if the embedded file is broken, which a test rules out.
func Default() *Config {
	cfg, err := Parse(defaultTOML, "default.toml")
	if err != nil {
		panic(fmt.Sprintf("config: embedded default.toml is invalid: %v", err))
	}
	return cfg
}

// AdminSocketPath returns the admin socket path: Admin.Socket when it is
// absolute, otherwise Admin.Socket inside DataDir.
func (c *Config) AdminSocketPath() string {
	if filepath.IsAbs(c.Admin.Socket) {
		return c.Admin.Socket
	}
	return filepath.Join(c.DataDir, c.Admin.Socket)
}

// DNSResolverAddr returns the host:port of the DNS resolver: DNS.Resolver
// when set, otherwise the first nameserver of /etc/resolv.conf with port 53.
func (c *Config) DNSResolverAddr() (string, error) {
	if c.DNS.Resolver != "" {
		return c.DNS.Resolver, nil
	}
	const resolvConf = "/etc/resolv.conf"
	f, err := os.Open(resolvConf)
	if err != nil {
		return "", fmt.Errorf("dns.resolver is empty and the system resolver is unknown: %w", err)
	}
	defer f.Close()
	addr, err := firstNameserver(f)
	if err != nil {
		return "", fmt.Errorf("dns.resolver is empty and the system resolver is unknown: %s: %w", resolvConf, err)
	}
	return addr, nil
}

// firstNameserver returns the first "nameserver" of a resolv.conf(5) file
// as host:port with port 53.
func firstNameserver(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// An IPv6 zone ("fe80::1%eth0") is kept: net.Dial understands it.
		host := fields[1]
		if _, err := netip.ParseAddr(host); err != nil {
			continue
		}
		return net.JoinHostPort(host, "53"), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return "", errors.New("no usable nameserver line")
}
