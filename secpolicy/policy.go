package secpolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Kind names the protection a connection gets. The names are those of the
// attempt records of checklist TLS07.
type Kind string

// Policy kinds. Opportunistic and Plain are what this package decides
// today; the others are reserved for DANE (RFC 7672) and MTA-STS (RFC 8461)
// and for routes that demand TLS.
const (
	KindPlain         Kind = "plain"           // no STARTTLS at all
	KindOpportunistic Kind = "opportunistic"   // STARTTLS when offered, no certificate check (RFC 7435)
	KindTLS           Kind = "tls"             // STARTTLS mandatory, certificate not checked
	KindTLSVerify     Kind = "tls-verify"      // STARTTLS mandatory, Web PKI certificate for the host name
	KindDANE          Kind = "dane"            // RFC 7672 authenticated TLS
	KindDANEUnauth    Kind = "dane-unauth"     // RFC 7672 §3.1.3: mandatory, unauthenticated TLS
	KindMTASTS        Kind = "mta-sts"         // RFC 8461 enforce
	KindMTASTSTesting Kind = "mta-sts-testing" // RFC 8461 testing: validate, report, deliver anyway
)

// Route security overrides, the values of a [[route]]'s security key.
const (
	SecurityAuto         = "" // decide from DNS: DANE, MTA-STS, else opportunistic
	SecurityDANEOnly     = "dane-only"
	SecurityMTASTSOrDANE = "mta-sts-or-dane"
	SecurityTLSVerify    = "tls-verify"
	SecurityTLS          = "tls"
	SecurityNone         = "none"
)

// HostPolicy says how to secure the connection to one host. Delivery code
// follows it and never decides trust itself.
type HostPolicy struct {
	Kind Kind
	// RequireTLS: the host must offer STARTTLS and the handshake (with
	// TLSConfig's verification) must succeed; otherwise the host fails and
	// the message is never sent in cleartext.
	RequireTLS bool
	// PlainFallback: after a failed TLS handshake the relay may connect
	// again and deliver in cleartext (checklist TLS01). Never set when
	// RequireTLS is.
	PlainFallback bool
	// TLSConfig is used for STARTTLS; nil for KindPlain.
	TLSConfig *tls.Config
	// Authenticated is true when a successful handshake proves the
	// server's identity (the attempt record's verification result).
	Authenticated bool
	// Reason explains the decision for logs, attempt records and DSNs.
	Reason string
	// TLSA is the TLSA lookup result when DANE applies.
	TLSA *TLSAResult

	dane *daneVerifier
}

// Verified describes what authenticated the last handshake made with this
// policy's TLSConfig ("DANE-EE 3 1 1 matched the server certificate"), or
// "" when nothing was verified.
func (hp HostPolicy) Verified() string {
	if hp.dane != nil {
		return hp.dane.matched
	}
	return ""
}

// Destination is what the policy is asked about: the recipient domain and
// one of the hosts that receive its mail.
type Destination struct {
	// Domain is the recipient (next-hop) domain.
	Domain string
	// Host is the MX host name (or a route's next hop) the relay connects to.
	Host string
	// Port is the SMTP port; 0 means 25. TLSA records are looked up for it.
	Port int
	// Security is a route's security override ("" for automatic).
	Security string
	// MXSecure: the MX RRset, or for an implicit MX the domain's address
	// records, is DNSSEC-secure; true for a configured next hop.
	MXSecure bool
	// HostSecure: the host's address records are DNSSEC-secure.
	HostSecure bool
}

// PolicyConfig configures a Policy.
type PolicyConfig struct {
	Resolver *Resolver
	// DANE enables DANE (RFC 7672); when false no TLSA lookups are made.
	DANE bool
	// RootCAs verifies Web PKI certificates (tls-verify); nil means the
	// system pool.
	RootCAs *x509.CertPool
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
}

// Policy decides the per-host TLS policy of deliveries.
type Policy struct {
	cfg PolicyConfig
}

// NewPolicy returns a policy decider.
func NewPolicy(cfg PolicyConfig) *Policy {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Policy{cfg: cfg}
}

// ForHost decides how to secure the connection to d.Host. An error means
// the host must not be used for this attempt (a temporary failure for the
// host); the caller tries the next host.
func (p *Policy) ForHost(ctx context.Context, d Destination) (HostPolicy, error) {
	sni := strings.TrimSuffix(d.Host, ".")
	switch d.Security {
	case SecurityNone:
		return HostPolicy{Kind: KindPlain, Reason: "route security none: no TLS"}, nil
	case SecurityTLS:
		return HostPolicy{
			Kind:       KindTLS,
			RequireTLS: true,
			// RFC 7435 §3: encryption without authentication. TLS 1.2 is
			// the minimum for every mandatory-TLS delivery (checklist TLS04).
			TLSConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
			Reason:    "route security tls: STARTTLS required, certificate not checked",
		}, nil
	case SecurityTLSVerify:
		return HostPolicy{
			Kind:          KindTLSVerify,
			RequireTLS:    true,
			Authenticated: true,
			TLSConfig:     &tls.Config{ServerName: sni, RootCAs: p.cfg.RootCAs, MinVersion: tls.VersionTLS12, Time: p.cfg.Now},
			Reason:        "route security tls-verify: STARTTLS required, Web PKI certificate for " + sni,
		}, nil
	case SecurityAuto, SecurityDANEOnly, SecurityMTASTSOrDANE:
	default:
		return HostPolicy{}, fmt.Errorf("unknown route security %q", d.Security)
	}

	hp, why, err := p.dane(ctx, d)
	if err != nil {
		return HostPolicy{}, err
	}
	if hp != nil {
		return *hp, nil
	}
	switch d.Security {
	case SecurityDANEOnly:
		return HostPolicy{}, fmt.Errorf("route security dane-only cannot be met for %s: DANE does not apply (%s)", sni, why)
	case SecurityMTASTSOrDANE:
		// Fail closed: MTA-STS is not implemented yet, so such a route is
		// never delivered with less than DANE.
		return HostPolicy{}, fmt.Errorf("route security mta-sts-or-dane cannot be met for %s: DANE does not apply (%s) and MTA-STS is not implemented yet", sni, why)
	}
	return HostPolicy{
		Kind:          KindOpportunistic,
		PlainFallback: true,
		// RFC 7435: any encryption beats none, so old TLS versions and
		// unverifiable certificates are accepted here.
		TLSConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10},
		Reason:    "opportunistic STARTTLS: no DANE (" + why + ")",
	}, nil
}

// dane decides whether DANE applies to d.Host (checklist DANE01–DANE07). It
// returns the DANE policy, or nil and the reason DANE does not apply, or an
// error when the host must be skipped (DANE05).
func (p *Policy) dane(ctx context.Context, d Destination) (*HostPolicy, string, error) {
	switch {
	case !p.cfg.DANE:
		return nil, "DANE disabled in the configuration", nil
	case p.cfg.Resolver == nil || !p.cfg.Resolver.TrustsAD():
		return nil, "the resolver's AD bit is not trusted", nil
	case !d.MXSecure:
		// DANE01: an insecure MX RRset gives no TLSA lookup at all.
		return nil, "MX records not DNSSEC-signed", nil
	case !d.HostSecure:
		return nil, "address records of " + strings.TrimSuffix(d.Host, ".") + " not DNSSEC-signed", nil
	}
	port := d.Port
	if port == 0 {
		port = 25
	}
	host := dns.Fqdn(strings.ToLower(d.Host))
	// The CNAME chain of the host's address records (already cached from
	// the address lookup) gives the expanded name for DANE02.
	target, chainSecure := host, false
	if a, err := p.cfg.Resolver.Lookup(ctx, host, dns.TypeA); err == nil {
		target, chainSecure = a.Target(), a.Security == Secure
	} else if a, err := p.cfg.Resolver.Lookup(ctx, host, dns.TypeAAAA); err == nil {
		target, chainSecure = a.Target(), a.Security == Secure
	}
	tr, err := p.cfg.Resolver.lookupTLSA(ctx, host, port, target, chainSecure)
	if err != nil {
		return nil, "", err
	}
	if tr == nil {
		return nil, "no DNSSEC-signed TLSA records for " + strings.TrimSuffix(host, "."), nil
	}
	base := strings.TrimSuffix(tr.BaseDomain, ".")
	if !tr.Usable {
		// DANE07 / RFC 7672 §3.1.3: only unusable records: STARTTLS is
		// still mandatory, but the certificate is not authenticated.
		return &HostPolicy{
			Kind:       KindDANEUnauth,
			RequireTLS: true,
			TLSConfig:  &tls.Config{ServerName: base, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
			Reason:     fmt.Sprintf("DANE: TLSA records at %s are all unusable: TLS required, certificate not authenticated", strings.TrimSuffix(tr.Name, ".")),
			TLSA:       tr,
		}, "", nil
	}
	v := &daneVerifier{
		// DANE10: reference identifiers are the TLSA base domain, the
		// original MX host name and the next-hop domain.
		names: []string{base, strings.TrimSuffix(host, "."), strings.TrimSuffix(d.Domain, ".")},
		now:   p.cfg.Now,
	}
	for _, r := range tr.Records {
		if r.Unusable == "" {
			v.records = append(v.records, r)
		}
	}
	return &HostPolicy{
		Kind:          KindDANE,
		RequireTLS:    true,
		Authenticated: true,
		TLSConfig: &tls.Config{
			ServerName:         base, // DANE11: SNI is the TLSA base domain
			InsecureSkipVerify: true, // Web PKI checks replaced by DANE ones below
			VerifyConnection:   v.verify,
			MinVersion:         tls.VersionTLS12, // TLS04
		},
		Reason: fmt.Sprintf("DANE: %d usable TLSA record(s) at %s", len(v.records), strings.TrimSuffix(tr.Name, ".")),
		TLSA:   tr,
		dane:   v,
	}, "", nil
}
