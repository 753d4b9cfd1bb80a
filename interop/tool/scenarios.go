package main

// The scenarios of the interop suite: one recipient domain each, designed
// from ../shared/rfc-checklist.md. Every domain is <id>.test. The generator
// turns this table into zones, certificates, receiving smtpd services and
// MTA-STS policies; the scorer compares what happened with Expect.

// Certificates a receiving host presents (Host.Cert).
const (
	certNone     = "none"          // no STARTTLS at all
	certCA       = "ca"            // issued by the test CA for the host name; chain leaf + CA
	certCAWrong  = "ca-wrong-name" // issued by the test CA for wrong.invalid-name.test
	certCANextHp = "ca-nexthop"    // issued by the test CA for the recipient domain only
	certSelf     = "self"          // self-signed for the host name
	certExpired  = "expired"       // self-signed, wrong name, expired in 2020
)

// TLSA records published for a host (Host.TLSA), "usage selector
// matching-type what": own = the host's own certificate or key, other = a
// key nobody uses, ca = the test CA certificate.
const (
	tlsaEEOwn    = "3 1 1 own"
	tlsaEEOwn302 = "3 0 2 own"
	tlsaEEOther  = "3 1 1 other"
	tlsaTACA     = "2 0 1 ca"
	tlsaPKIXEE   = "1 1 1 own" // usage 1: unusable for SMTP (RFC 7672 §3.1.3)
)

// Zones that hold MX hosts of other domains.
const (
	zoneHosts         = "hosts.test"    // signed
	zoneUnsignedHosts = "unsigned.test" // unsigned (no DS)
)

// Host is an MX host (or a decoy address record) with the smtpd service
// that answers on its address.
type Host struct {
	Name      string // FQDN without trailing dot
	Pref      int
	Cert      string
	TLSA      []string
	BogusTLSA bool // the RRSIG over its TLSA RRset is broken
	// Target, when set, makes Name a CNAME to Target: the address and the
	// TLSA records are Target's, and OrigTLSA are published at Name.
	Target   string
	OrigTLSA []string
}

// STS is an MTA-STS policy for the scenario's domain.
type STS struct {
	Mode   string   // enforce | testing | none
	Server string   // relay (the relay's own [inbound] listener) | nginx
	MX     []string // mx patterns
}

// Expect is the relay's expected outcome.
type Expect struct {
	Outcome string // delivered | deferred | bounced
	Via     string // MX host that receives the message (delivered)
	TLS     bool   // delivered over TLS
	Policy  string // relayctl policy lookup's policy for Via (delivered)
}

// Scenario is one recipient domain and what must happen to one message.
type Scenario struct {
	ID        string
	Checklist string
	Desc      string
	Signed    bool // <id>.test is signed and has a DS in test.
	MX        []Host
	NullMX    bool
	BogusMX   bool  // the RRSIG over the MX RRset is broken
	Decoy     *Host // an A record for the domain itself: proves there is no fallback to it
	STS       *STS
	Expect    Expect
	// PostfixNA: Postfix without an MTA-STS policy daemon cannot do what
	// the scenario tests; its column is informational only.
	PostfixNA bool
}

// Domain is the scenario's recipient domain.
func (s *Scenario) Domain() string { return s.ID + ".test" }

func mx(s, label string) string { return label + "." + s + ".test" }

func delivered(via string, tls bool, policy string) Expect {
	return Expect{Outcome: "delivered", Via: via, TLS: tls, Policy: policy}
}

var (
	deferred = Expect{Outcome: "deferred"}
	bounced  = Expect{Outcome: "bounced"}
)

var scenarios = []*Scenario{
	// DANE-EE.
	{
		ID: "dane-ee", Checklist: "DANE03 DANE09", Signed: true,
		Desc:   "DANE-EE 3 1 1 matching the MX certificate",
		MX:     []Host{{Name: mx("dane-ee", "mx"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOwn}}},
		Expect: delivered(mx("dane-ee", "mx"), true, "dane"),
	},
	{
		ID: "dane-ee-expired", Checklist: "DANE09", Signed: true,
		Desc:   "DANE-EE 3 1 1 matching an expired self-signed certificate with a wrong name",
		MX:     []Host{{Name: mx("dane-ee-expired", "mx"), Pref: 10, Cert: certExpired, TLSA: []string{tlsaEEOwn}}},
		Expect: delivered(mx("dane-ee-expired", "mx"), true, "dane"),
	},
	{
		ID: "dane-ee-rrset", Checklist: "DANE06 DANE13", Signed: true,
		Desc:   "TLSA RRset of a mismatching 3 1 1 and a matching 3 0 2",
		MX:     []Host{{Name: mx("dane-ee-rrset", "mx"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOther, tlsaEEOwn302}}},
		Expect: delivered(mx("dane-ee-rrset", "mx"), true, "dane"),
	},
	{
		ID: "dane-ee-mx2", Checklist: "DANE12", Signed: true,
		Desc: "MX 10 has a mismatching DANE-EE record, MX 20 a matching one",
		MX: []Host{
			{Name: mx("dane-ee-mx2", "mx1"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOther}},
			{Name: mx("dane-ee-mx2", "mx2"), Pref: 20, Cert: certCA, TLSA: []string{tlsaEEOwn}},
		},
		Expect: delivered(mx("dane-ee-mx2", "mx2"), true, "dane"),
	},
	{
		ID: "dane-ee-fail", Checklist: "DANE08 DANE12", Signed: true,
		Desc: "every MX host has a mismatching DANE-EE record (valid Web PKI certificates)",
		MX: []Host{
			{Name: mx("dane-ee-fail", "mx1"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOther}},
			{Name: mx("dane-ee-fail", "mx2"), Pref: 20, Cert: certCA, TLSA: []string{tlsaEEOther}},
		},
		Expect: deferred,
	},
	{
		ID: "dane-no-starttls", Checklist: "DANE08 TLS03", Signed: true,
		Desc:   "usable DANE-EE record, server does not offer STARTTLS",
		MX:     []Host{{Name: mx("dane-no-starttls", "mx"), Pref: 10, Cert: certNone, TLSA: []string{tlsaEEOther}}},
		Expect: deferred,
	},
	// DANE-TA.
	{
		ID: "dane-ta", Checklist: "DANE10", Signed: true,
		Desc:   "DANE-TA 2 0 1 of the CA sent in the chain, leaf names the MX host",
		MX:     []Host{{Name: mx("dane-ta", "mx"), Pref: 10, Cert: certCA, TLSA: []string{tlsaTACA}}},
		Expect: delivered(mx("dane-ta", "mx"), true, "dane"),
	},
	{
		ID: "dane-ta-nexthop", Checklist: "DANE10", Signed: true,
		Desc:   "DANE-TA 2 0 1, leaf names only the recipient domain (next-hop name)",
		MX:     []Host{{Name: mx("dane-ta-nexthop", "mx"), Pref: 10, Cert: certCANextHp, TLSA: []string{tlsaTACA}}},
		Expect: delivered(mx("dane-ta-nexthop", "mx"), true, "dane"),
	},
	{
		ID: "dane-ta-wrong-name", Checklist: "DANE10", Signed: true,
		Desc:   "DANE-TA 2 0 1, CA in the chain, leaf names an unrelated host",
		MX:     []Host{{Name: mx("dane-ta-wrong-name", "mx"), Pref: 10, Cert: certCAWrong, TLSA: []string{tlsaTACA}}},
		Expect: deferred,
	},
	{
		ID: "dane-cname", Checklist: "DANE02", Signed: true,
		Desc: "MX host is a secure CNAME: matching TLSA at the target, mismatching at the MX name",
		MX: []Host{{Name: mx("dane-cname", "mx"), Pref: 10, Cert: certCA, Target: "cname-target." + zoneHosts,
			TLSA: []string{tlsaEEOwn}, OrigTLSA: []string{tlsaEEOther}}},
		Expect: delivered(mx("dane-cname", "mx"), true, "dane"),
	},
	// Unusable TLSA.
	{
		ID: "tlsa-unusable", Checklist: "DANE06 DANE07", Signed: true,
		Desc:   "only a PKIX-EE (usage 1) record, server offers STARTTLS (self-signed)",
		MX:     []Host{{Name: mx("tlsa-unusable", "mx"), Pref: 10, Cert: certSelf, TLSA: []string{tlsaPKIXEE}}},
		Expect: delivered(mx("tlsa-unusable", "mx"), true, "dane-unauth"),
	},
	{
		ID: "tlsa-unusable-plain", Checklist: "DANE07 DANE08", Signed: true,
		Desc:   "only a PKIX-EE (usage 1) record, server without STARTTLS",
		MX:     []Host{{Name: mx("tlsa-unusable-plain", "mx"), Pref: 10, Cert: certNone, TLSA: []string{tlsaPKIXEE}}},
		Expect: deferred,
	},
	// Bogus TLSA.
	{
		ID: "tlsa-bogus", Checklist: "DANE05 DNS02", Signed: true,
		Desc: "MX 10's TLSA RRSIG is broken (SERVFAIL), MX 20 has a matching DANE-EE record",
		MX: []Host{
			{Name: mx("tlsa-bogus", "mx1"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOwn}, BogusTLSA: true},
			{Name: mx("tlsa-bogus", "mx2"), Pref: 20, Cert: certCA, TLSA: []string{tlsaEEOwn}},
		},
		Expect: delivered(mx("tlsa-bogus", "mx2"), true, "dane"),
	},
	{
		ID: "tlsa-bogus-only", Checklist: "DANE05 DNS02", Signed: true,
		Desc:   "the only MX host's TLSA RRSIG is broken (SERVFAIL)",
		MX:     []Host{{Name: mx("tlsa-bogus-only", "mx"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOwn}, BogusTLSA: true}},
		Expect: deferred,
	},
	// Insecure zones: no DANE.
	{
		ID: "tlsa-insecure-host", Checklist: "DANE01 DANE04", Signed: true,
		Desc:   "secure MX, MX host and its mismatching TLSA in an unsigned zone",
		MX:     []Host{{Name: "mx." + zoneUnsignedHosts, Pref: 10, Cert: certSelf, TLSA: []string{tlsaEEOther}}},
		Expect: delivered("mx."+zoneUnsignedHosts, true, "opportunistic"),
	},
	{
		ID: "insecure-mx", Checklist: "DANE01", Signed: false,
		Desc:   "unsigned MX zone; MX host in a signed zone with a mismatching TLSA",
		MX:     []Host{{Name: "mx1." + zoneHosts, Pref: 10, Cert: certSelf, TLSA: []string{tlsaEEOther}}},
		Expect: delivered("mx1."+zoneHosts, true, "opportunistic"),
	},
	// MX resolution.
	{
		ID: "null-mx", Checklist: "MX03 DSN01", Signed: true,
		Desc:   "null MX (MX 0 .): bounce at once, DSN to the sender",
		NullMX: true,
		Decoy:  &Host{Name: "null-mx.test", Cert: certNone},
		Expect: bounced,
	},
	{
		ID: "mx-bogus", Checklist: "MX04 DNS02", Signed: true,
		Desc:    "MX RRSIG broken (SERVFAIL); the domain's A record has a working SMTP server",
		MX:      []Host{{Name: mx("mx-bogus", "mx"), Pref: 10, Cert: certNone}},
		BogusMX: true,
		Decoy:   &Host{Name: "mx-bogus.test", Cert: certNone},
		Expect:  deferred,
	},
	// MTA-STS (unsigned zones: no DANE).
	{
		ID: "sts-enforce", Checklist: "STS02 STS12 SRV01", Signed: false,
		Desc:   "MTA-STS enforce (policy from the relay's [inbound]), valid certificate",
		MX:     []Host{{Name: mx("sts-enforce", "mx"), Pref: 10, Cert: certCA}},
		STS:    &STS{Mode: "enforce", Server: "relay", MX: []string{mx("sts-enforce", "mx")}},
		Expect: delivered(mx("sts-enforce", "mx"), true, "mta-sts"), PostfixNA: true,
	},
	{
		ID: "sts-enforce-nginx", Checklist: "STS02 STS06 STS12", Signed: false,
		Desc:   "MTA-STS enforce (policy from nginx, wildcard mx), valid certificate",
		MX:     []Host{{Name: mx("sts-enforce-nginx", "mx"), Pref: 10, Cert: certCA}},
		STS:    &STS{Mode: "enforce", Server: "nginx", MX: []string{"*.sts-enforce-nginx.test"}},
		Expect: delivered(mx("sts-enforce-nginx", "mx"), true, "mta-sts"), PostfixNA: true,
	},
	{
		ID: "sts-unlisted", Checklist: "STS12", Signed: false,
		Desc: "MTA-STS enforce (nginx); MX 10 is not in the policy, MX 20 is",
		MX: []Host{
			{Name: mx("sts-unlisted", "mx1"), Pref: 10, Cert: certCA},
			{Name: mx("sts-unlisted", "mx2"), Pref: 20, Cert: certCA},
		},
		STS:    &STS{Mode: "enforce", Server: "nginx", MX: []string{mx("sts-unlisted", "mx2")}},
		Expect: delivered(mx("sts-unlisted", "mx2"), true, "mta-sts"), PostfixNA: true,
	},
	{
		ID: "sts-bad-cert", Checklist: "STS12", Signed: false,
		Desc:   "MTA-STS enforce (relay); the MX certificate does not name the MX host",
		MX:     []Host{{Name: mx("sts-bad-cert", "mx"), Pref: 10, Cert: certCAWrong}},
		STS:    &STS{Mode: "enforce", Server: "relay", MX: []string{mx("sts-bad-cert", "mx")}},
		Expect: deferred, PostfixNA: true,
	},
	{
		ID: "sts-testing", Checklist: "STS14", Signed: false,
		Desc:   "MTA-STS testing (nginx); self-signed MX certificate",
		MX:     []Host{{Name: mx("sts-testing", "mx"), Pref: 10, Cert: certSelf}},
		STS:    &STS{Mode: "testing", Server: "nginx", MX: []string{mx("sts-testing", "mx")}},
		Expect: delivered(mx("sts-testing", "mx"), true, "mta-sts-testing"), PostfixNA: true,
	},
	{
		ID: "sts-none", Checklist: "STS15", Signed: false,
		Desc:   "MTA-STS none (relay); self-signed MX certificate",
		MX:     []Host{{Name: mx("sts-none", "mx"), Pref: 10, Cert: certSelf}},
		STS:    &STS{Mode: "none", Server: "relay"},
		Expect: delivered(mx("sts-none", "mx"), true, "opportunistic"), PostfixNA: true,
	},
	// DANE and MTA-STS on one domain.
	{
		ID: "dane-sts", Checklist: "STS16", Signed: true,
		Desc:   "DANE-EE match and MTA-STS enforce (relay); certificate not valid for Web PKI",
		MX:     []Host{{Name: mx("dane-sts", "mx"), Pref: 10, Cert: certSelf, TLSA: []string{tlsaEEOwn}}},
		STS:    &STS{Mode: "enforce", Server: "relay", MX: []string{mx("dane-sts", "mx")}},
		Expect: delivered(mx("dane-sts", "mx"), true, "dane"),
	},
	{
		ID: "dane-sts-fail", Checklist: "STS16", Signed: true,
		Desc:   "DANE-EE mismatch and MTA-STS enforce (nginx) with a valid Web PKI certificate",
		MX:     []Host{{Name: mx("dane-sts-fail", "mx"), Pref: 10, Cert: certCA, TLSA: []string{tlsaEEOther}}},
		STS:    &STS{Mode: "enforce", Server: "nginx", MX: []string{mx("dane-sts-fail", "mx")}},
		Expect: deferred,
	},
	// No DANE, no MTA-STS.
	{
		ID: "opportunistic", Checklist: "TLS01 DANE04", Signed: true,
		Desc:   "signed zone without TLSA (validated absence), STARTTLS with a self-signed certificate",
		MX:     []Host{{Name: mx("opportunistic", "mx"), Pref: 10, Cert: certSelf}},
		Expect: delivered(mx("opportunistic", "mx"), true, "opportunistic"),
	},
	{
		ID: "plain", Checklist: "TLS03", Signed: false,
		Desc:   "unsigned zone, server without STARTTLS",
		MX:     []Host{{Name: mx("plain", "mx"), Pref: 10, Cert: certNone}},
		Expect: delivered(mx("plain", "mx"), false, "opportunistic"),
	},
}

// The sender's domain: its MX receives the DSNs (plain SMTP).
const (
	senderDomain = "sink.test"
	senderAddr   = "sender@sink.test"
	sinkHost     = "mx.sink.test"
)
