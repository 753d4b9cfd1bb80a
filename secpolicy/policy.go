package secpolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
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
}

// Destination is what the policy is asked about: the recipient domain and
// one of the hosts that receive its mail.
type Destination struct {
	// Domain is the recipient (next-hop) domain.
	Domain string
	// Host is the MX host name (or a route's next hop) the relay connects to.
	Host string
	// Security is a route's security override ("" for automatic).
	Security string
}

// PolicyConfig configures a Policy.
type PolicyConfig struct {
	Resolver *Resolver
	// RootCAs verifies Web PKI certificates (tls-verify); nil means the
	// system pool.
	RootCAs *x509.CertPool
}

// Policy decides the per-host TLS policy of deliveries.
type Policy struct {
	cfg PolicyConfig
}

// NewPolicy returns a policy decider.
func NewPolicy(cfg PolicyConfig) *Policy { return &Policy{cfg: cfg} }

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
			TLSConfig:     &tls.Config{ServerName: sni, RootCAs: p.cfg.RootCAs, MinVersion: tls.VersionTLS12},
			Reason:        "route security tls-verify: STARTTLS required, Web PKI certificate for " + sni,
		}, nil
	case SecurityDANEOnly, SecurityMTASTSOrDANE:
		// Fail closed: a route that demands DANE or MTA-STS is never
		// delivered with less while those are not implemented.
		return HostPolicy{}, fmt.Errorf("route security %q for %s cannot be met: this relay does not implement it yet", d.Security, d.Domain)
	case SecurityAuto:
		return HostPolicy{
			Kind:          KindOpportunistic,
			PlainFallback: true,
			// RFC 7435: any encryption beats none, so old TLS versions and
			// unverifiable certificates are accepted here.
			TLSConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10},
			Reason:    "no DANE or MTA-STS policy: opportunistic STARTTLS",
		}, nil
	}
	return HostPolicy{}, fmt.Errorf("unknown route security %q", d.Security)
}
