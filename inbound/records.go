package inbound

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Record is a DNS record to publish for a domain, or advice about one.
type Record struct {
	// Name is the owner name, fully qualified with a trailing dot.
	Name string
	// Type is the record type: "TXT", "CNAME" or "TLSA".
	Type string
	// Value is the record data in zone-file syntax (TXT data quoted). It is
	// empty when it depends on where the relay runs; Note says what to put.
	Value string
	// Note explains what the record is for.
	Note string
}

// DNSRecords returns the records a domain publishes for the policy p
// served by this relay (checklist SRV04, RPT07):
//
//   - _mta-sts.<domain> TXT "v=STSv1; id=<PolicyID>" (RFC 8461 §3.1);
//   - mta-sts.<domain>, pointed at this relay (CNAME, or A/AAAA records);
//   - _smtp._tls.<domain> TXT "v=TLSRPTv1; rua=<reportURL>" (RFC 8460 §3),
//     when reportURL is not empty;
//   - with intakeCert, a DANE-EE TLSA record "3 1 1 <SHA-256 of the public
//     key>" (RFC 7672 §3.1) at _25._tcp.<host> for each MX host that
//     certificate is valid for.
//
// p is expected to be valid (see RenderPolicy).
func DNSRecords(domain string, p PolicyConfig, reportURL string, intakeCert *x509.Certificate) []Record {
	domain = normalizeDomain(domain)
	p.Domain = domain
	p = normalizePolicy(p)
	id := PolicyID(renderPolicy(p))
	recs := []Record{
		{
			Name:  "_mta-sts." + domain + ".",
			Type:  "TXT",
			Value: fmt.Sprintf("%q", "v=STSv1; id="+id),
			Note:  "announces the policy; the id changes whenever the policy does, so senders fetch it again",
		},
		{
			Name: PolicyHost(domain) + ".",
			Type: "CNAME",
			Note: "point it at this relay: a CNAME to the relay's host name, or A/AAAA records with its public addresses; " +
				"port 443 must reach the [inbound] listener, with a certificate valid for " + PolicyHost(domain),
		},
	}
	if reportURL != "" {
		recs = append(recs, Record{
			Name:  "_smtp._tls." + domain + ".",
			Type:  "TXT",
			Value: fmt.Sprintf("%q", "v=TLSRPTv1; rua="+reportURL),
			Note:  "asks senders to POST their daily TLS reports to this relay",
		})
	}
	if intakeCert != nil {
		spki := sha256.Sum256(intakeCert.RawSubjectPublicKeyInfo)
		for _, host := range tlsaHosts(p, intakeCert) {
			recs = append(recs, Record{
				Name:  "_25._tcp." + host + ".",
				Type:  "TLSA",
				Value: "3 1 1 " + hex.EncodeToString(spki[:]),
				Note: "for the MX host " + host + ": publish it only if " + host + " receives mail on port 25 with this certificate, " +
					"in a DNSSEC-signed zone (RFC 7672); it pins the key, so it survives renewals that keep the key",
			})
		}
	}
	return recs
}

// tlsaHosts returns the hosts a TLSA record for cert is meant for: the
// policy's literal MX hosts the certificate is valid for, else the
// certificate's own (non-wildcard) names.
func tlsaHosts(p PolicyConfig, cert *x509.Certificate) []string {
	var hosts []string
	for _, m := range p.MX {
		if !strings.HasPrefix(m, "*.") && cert.VerifyHostname(m) == nil {
			hosts = append(hosts, m)
		}
	}
	if len(hosts) > 0 {
		return hosts
	}
	for _, n := range leafNames(cert) {
		if !strings.HasPrefix(n, "*.") && checkDomainName(n, false) == nil {
			hosts = append(hosts, n)
		}
	}
	return hosts
}
