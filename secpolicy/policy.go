package secpolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
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
	// STS is the MTA-STS policy applied, when one is.
	STS *STSPolicy

	dane    *daneVerifier
	testing *stsTestingVerifier
}

// TestingFailure is what an MTA-STS testing policy would have refused in
// the last handshake (or about the host itself), "" when nothing.
func (hp HostPolicy) TestingFailure() string {
	if hp.testing != nil {
		return hp.testing.failure
	}
	return ""
}

// ReuseKey identifies what a connection opened under this policy was
// checked against. A pooled connection may carry mail for another
// destination only when that destination's policy has the same key:
// same kind, server name and, for DANE, the same TLSA records and
// reference names (checklist DANE10, DANE14).
func (hp HostPolicy) ReuseKey() string {
	var b strings.Builder
	b.WriteString(string(hp.Kind))
	if hp.TLSConfig != nil {
		b.WriteString("|" + hp.TLSConfig.ServerName)
	}
	if hp.dane != nil {
		b.WriteString("|" + strings.Join(hp.dane.names, ","))
		for _, r := range hp.dane.records {
			fmt.Fprintf(&b, "|%s:%x", r.Params(), r.Data)
		}
	}
	if hp.testing != nil {
		b.WriteString("|" + hp.testing.failure)
	}
	return b.String()
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
	// STS is the recipient domain's MTA-STS policy; nil when it has none.
	STS *STSPolicy
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
		if d.Security == SecurityDANEOnly && hp.Kind == KindDANEUnauth {
			return HostPolicy{}, fmt.Errorf("route security dane-only cannot be met for %s: its TLSA records are all unusable", sni)
		}
		// STS16 / RFC 8461 §2: where DANE applies, MTA-STS is not applied
		// to that host, and it can never rescue a failing DANE host.
		return *hp, nil
	}
	if d.Security == SecurityDANEOnly {
		return HostPolicy{}, fmt.Errorf("route security dane-only cannot be met for %s: DANE does not apply (%s)", sni, why)
	}
	if sts := d.STS; sts != nil && sts.Mode != STSModeNone {
		enforce := sts.Mode == STSModeEnforce || d.Security == SecurityMTASTSOrDANE
		listed := sts.Match != nil && sts.Match(sni)
		if enforce {
			if !listed {
				// STS12: hosts outside the policy are not connected to.
				return HostPolicy{}, &PolicyError{ResultType: "validation-failure",
					Msg: fmt.Sprintf("MTA-STS: %s is not an MX host allowed by the policy of %s (id %s)", sni, d.Domain, sts.ID)}
			}
			return HostPolicy{
				Kind:          KindMTASTS,
				RequireTLS:    true,
				Authenticated: true,
				// RFC 8461 §4.2: STARTTLS and a Web PKI certificate that is
				// valid, unexpired and names the MX host.
				TLSConfig: &tls.Config{ServerName: sni, RootCAs: p.cfg.RootCAs, MinVersion: tls.VersionTLS12, Time: p.cfg.Now},
				Reason:    fmt.Sprintf("MTA-STS policy of %s in mode %s (id %s)", d.Domain, sts.Mode, sts.ID),
				STS:       sts,
			}, nil
		}
		// STS14 / RFC 8461 §5: testing: deliver as without a policy, but
		// check what enforce would demand and record the failure.
		v := &stsTestingVerifier{host: sni, roots: p.cfg.RootCAs, now: p.cfg.Now}
		if !listed {
			v.failure = fmt.Sprintf("%s is not an MX host allowed by the policy", sni)
		}
		return HostPolicy{
			Kind:          KindMTASTSTesting,
			PlainFallback: true,
			TLSConfig:     &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, VerifyConnection: v.verify},
			Reason:        fmt.Sprintf("MTA-STS policy of %s in mode testing (id %s): failures are recorded, not enforced", d.Domain, sts.ID),
			STS:           sts,
			testing:       v,
		}, nil
	}
	if d.Security == SecurityMTASTSOrDANE {
		return HostPolicy{}, fmt.Errorf("route security mta-sts-or-dane cannot be met for %s: DANE does not apply (%s) and %s publishes no MTA-STS policy", sni, why, d.Domain)
	}
	return HostPolicy{
		Kind:          KindOpportunistic,
		PlainFallback: true,
		// RFC 7435: any encryption beats none, so old TLS versions and
		// unverifiable certificates are accepted here.
		TLSConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10},
		Reason:    "opportunistic STARTTLS: no DANE (" + why + "), no MTA-STS policy",
	}, nil
}

// Opportunistic returns the opportunistic policy for host, with reason.
func (p *Policy) Opportunistic(host, reason string) HostPolicy {
	return HostPolicy{
		Kind:          KindOpportunistic,
		PlainFallback: true,
		TLSConfig:     &tls.Config{ServerName: strings.TrimSuffix(host, "."), InsecureSkipVerify: true, MinVersion: tls.VersionTLS10},
		Reason:        reason,
	}
}

// dedupe drops repeated names, keeping the first of each.
func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// STS policy modes (RFC 8461 §3.2).
const (
	STSModeEnforce = "enforce"
	STSModeTesting = "testing"
	STSModeNone    = "none"
)

// STSPolicy is the part of a recipient domain's MTA-STS policy that host
// decisions need.
type STSPolicy struct {
	Mode string
	ID   string
	// Match reports whether an MX host name is allowed by the policy's
	// mx patterns (checklist STS06).
	Match func(host string) bool
}

// PolicyError is a policy decision that rules a host out, with the RFC
// 8460 result type a TLS report would give it.
type PolicyError struct {
	ResultType string
	Msg        string
}

func (e *PolicyError) Error() string { return e.Msg }

// stsTestingVerifier checks a certificate as MTA-STS enforce would and
// remembers the outcome, without failing the handshake.
type stsTestingVerifier struct {
	host    string
	roots   *x509.CertPool
	now     func() time.Time
	failure string // what enforce would have refused, "" when nothing
}

func (v *stsTestingVerifier) verify(cs tls.ConnectionState) error {
	if v.failure != "" {
		return nil // the host is outside the policy: that is the finding
	}
	if err := verifyWebPKI(cs, v.host, v.roots, v.now()); err != nil {
		v.failure = err.Error()
	}
	return nil
}

// verifyWebPKI verifies the server's chain against roots and host.
func verifyWebPKI(cs tls.ConnectionState, host string, roots *x509.CertPool, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, CurrentTime: now})
	return err
}

// ResultType maps a failure to its RFC 8460 §4.3 result type ("" when it
// is not a policy failure).
func ResultType(err error) string {
	var de *DANEError
	var pe *PolicyError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var invErr x509.CertificateInvalidError
	var lookErr *LookupError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &de):
		return de.ResultType
	case errors.As(err, &pe):
		return pe.ResultType
	case errors.As(err, &hostErr):
		return "certificate-host-mismatch"
	case errors.As(err, &authErr):
		return "certificate-not-trusted"
	case errors.As(err, &invErr) && invErr.Reason == x509.Expired:
		return "certificate-expired"
	case errors.As(err, &invErr):
		return "validation-failure"
	case errors.As(err, &lookErr) && strings.Contains(err.Error(), "TLSA"):
		return "dnssec-invalid"
	}
	return ""
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
		names: dedupe([]string{base, strings.TrimSuffix(host, "."), strings.TrimSuffix(d.Domain, ".")}),
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
