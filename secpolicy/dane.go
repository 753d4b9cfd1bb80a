package secpolicy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TLSA certificate usages, selectors and matching types (RFC 6698 §2.1,
// RFC 7218 mnemonics).
const (
	UsagePKIXTA = 0
	UsagePKIXEE = 1
	UsageDANETA = 2
	UsageDANEEE = 3

	SelectorCert = 0
	SelectorSPKI = 1

	MatchFull   = 0
	MatchSHA256 = 1
	MatchSHA512 = 2
)

// TLSARecord is one TLSA record and whether SMTP may use it.
type TLSARecord struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
	// Unusable says why the record is not usable for SMTP, or "" when it
	// is (checklist DANE06, RFC 7672 §3.1.3).
	Unusable string
}

// String is the record in presentation form with the data abbreviated:
// "3 1 1 4a5b…".
func (r TLSARecord) String() string {
	h := hex.EncodeToString(r.Data)
	if len(h) > 16 {
		h = h[:16] + "…"
	}
	return fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, h)
}

// Params is the "u s m" triple of a record, as used in messages.
func (r TLSARecord) Params() string {
	return fmt.Sprintf("%d %d %d", r.Usage, r.Selector, r.MatchingType)
}

func newTLSARecord(rr *dns.TLSA) TLSARecord {
	rec := TLSARecord{Usage: rr.Usage, Selector: rr.Selector, MatchingType: rr.MatchingType}
	data, err := hex.DecodeString(rr.Certificate)
	rec.Data = data
	switch {
	case err != nil || len(data) == 0:
		rec.Unusable = "malformed certificate association data"
	case rr.Usage == UsagePKIXTA || rr.Usage == UsagePKIXEE:
		// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not for SMTP.
		rec.Unusable = fmt.Sprintf("usage %d (PKIX) is not used for SMTP (RFC 7672 §3.1.3)", rr.Usage)
	case rr.Usage != UsageDANETA && rr.Usage != UsageDANEEE:
		rec.Unusable = fmt.Sprintf("unknown usage %d", rr.Usage)
	case rr.Selector != SelectorCert && rr.Selector != SelectorSPKI:
		rec.Unusable = fmt.Sprintf("unknown selector %d", rr.Selector)
	case rr.MatchingType == MatchSHA256 && len(data) != sha256.Size:
		rec.Unusable = fmt.Sprintf("SHA-256 data of %d bytes", len(data))
	case rr.MatchingType == MatchSHA512 && len(data) != sha512.Size:
		rec.Unusable = fmt.Sprintf("SHA-512 data of %d bytes", len(data))
	case rr.MatchingType > MatchSHA512:
		rec.Unusable = fmt.Sprintf("unknown matching type %d", rr.MatchingType)
	}
	return rec
}

// TLSAResult is the outcome of a TLSA lookup for one MX host.
type TLSAResult struct {
	// Name is the TLSA query name that gave the records, "_25._tcp.<base>".
	Name string
	// BaseDomain is the TLSA base domain (RFC 7672 §2.2.2): the name the
	// records were found under, used for SNI and name checks.
	BaseDomain string
	// Records are all records of the secure RRset; nil when DANE does not
	// apply.
	Records []TLSARecord
	// Usable reports whether at least one record is usable.
	Usable bool
}

// lookupTLSA implements DANE02–DANE05 for one host. host is the MX host
// name; chain is the CNAME chain of its address lookup (empty when none)
// and chainSecure whether every link of it is secure. A nil result with a
// nil error means DANE does not apply (DANE04). An error means the host
// must be skipped for this attempt (DANE05).
func (r *Resolver) lookupTLSA(ctx context.Context, host string, port int, target string, chainSecure bool) (*TLSAResult, error) {
	var names []string
	// DANE02 / RFC 7672 §2.2.2: with a secure CNAME chain, the expanded
	// name is tried first and then the original name.
	if target != "" && target != host && chainSecure {
		names = append(names, target)
	}
	names = append(names, host)
	for _, base := range names {
		qname := fmt.Sprintf("_%d._tcp.%s", port, base)
		a, err := r.Lookup(ctx, qname, dns.TypeTLSA)
		if err != nil {
			return nil, fmt.Errorf("TLSA lookup for %s failed: %w", strings.TrimSuffix(qname, "."), err)
		}
		if a.Security != Secure || len(a.Records) == 0 {
			continue // DANE04: insecure, NXDOMAIN or NODATA
		}
		res := &TLSAResult{Name: dns.Fqdn(qname), BaseDomain: base}
		for _, rr := range a.Records {
			if t, ok := rr.(*dns.TLSA); ok {
				rec := newTLSARecord(t)
				res.Usable = res.Usable || rec.Unusable == ""
				res.Records = append(res.Records, rec)
			}
		}
		if len(res.Records) == 0 {
			continue
		}
		return res, nil
	}
	return nil, nil
}

// DANEError is a failed DANE verification with the RFC 8460 result type a
// TLS report would give it.
type DANEError struct {
	ResultType string // validation-failure, certificate-host-mismatch, certificate-expired, tlsa-invalid
	Msg        string
}

func (e *DANEError) Error() string { return "DANE: " + e.Msg }

// daneVerifier checks a server's certificate chain against the usable
// TLSA records of its host (checklist DANE09, DANE10, DANE13).
type daneVerifier struct {
	records []TLSARecord // usable ones only
	// names are the reference identifiers for DANE-TA: the TLSA base
	// domain, the original MX host name and the next-hop domain.
	names []string
	now   func() time.Time
	// matched is set by verify to what authenticated the server.
	matched string
}

// verify is the tls.Config VerifyConnection callback.
func (v *daneVerifier) verify(cs tls.ConnectionState) error {
	chain := cs.PeerCertificates
	if len(chain) == 0 {
		return &DANEError{ResultType: "validation-failure", Msg: "server sent no certificate"}
	}
	var taErrs []string
	// DANE13: any one usable record that matches authenticates the
	// connection, whatever the order of the RRset.
	for _, rec := range v.records {
		switch rec.Usage {
		case UsageDANEEE:
			// DANE09 / RFC 7672 §3.1.1: only the leaf is matched; its names
			// and validity dates are not checked.
			if matchCert(rec, chain[0]) {
				v.matched = "DANE-EE " + rec.Params() + " matched the server certificate"
				return nil
			}
		case UsageDANETA:
			err := v.verifyTA(rec, chain)
			if err == nil {
				return nil
			}
			if !errors.Is(err, errNoAnchor) {
				taErrs = append(taErrs, err.Error())
			}
		}
	}
	if len(taErrs) > 0 {
		rt := "validation-failure"
		msg := strings.Join(taErrs, "; ")
		switch {
		case strings.Contains(msg, "do not match"):
			rt = "certificate-host-mismatch"
		case strings.Contains(msg, "expired") || strings.Contains(msg, "not yet valid"):
			rt = "certificate-expired"
		}
		return &DANEError{ResultType: rt, Msg: msg}
	}
	return &DANEError{ResultType: "validation-failure", Msg: v.noMatchMessage()}
}

func (v *daneVerifier) noMatchMessage() string {
	if len(v.records) == 1 {
		return "TLSA " + v.records[0].Params() + " matched no certificate in the chain"
	}
	params := make([]string, len(v.records))
	for i, r := range v.records {
		params[i] = r.Params()
	}
	return fmt.Sprintf("none of %d TLSA records (%s) matched the certificate chain", len(v.records), strings.Join(params, ", "))
}

var errNoAnchor = errors.New("trust anchor not found in chain")

// verifyTA checks a DANE-TA(2) record (checklist DANE10, RFC 7672 §3.1.2):
// the chain the server sent must lead from the leaf to a certificate or
// key matching the record; the leaf's validity dates are checked and one
// of its names must match a reference identifier.
func (v *daneVerifier) verifyTA(rec TLSARecord, chain []*x509.Certificate) error {
	var anchors []*x509.Certificate
	for _, c := range chain[1:] {
		if matchCert(rec, c) {
			anchors = append(anchors, c)
		}
	}
	if len(anchors) == 0 && rec.MatchingType == MatchFull {
		// A full certificate or key in the record may name an anchor the
		// server does not send (RFC 7671 §5.2.2).
		if a := anchorFromData(rec, chain); a != nil {
			anchors = append(anchors, a)
		}
	}
	if len(anchors) == 0 {
		return errNoAnchor
	}
	var lastErr error
	for _, anchor := range anchors {
		roots := x509.NewCertPool()
		roots.AddCert(anchor)
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			if c != anchor {
				inter.AddCert(c)
			}
		}
		_, err := chain[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   v.now(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			lastErr = fmt.Errorf("TLSA %s: chain does not verify to the trust anchor: %w", rec.Params(), err)
			continue
		}
		for _, name := range v.names {
			if name != "" && chain[0].VerifyHostname(name) == nil {
				v.matched = fmt.Sprintf("DANE-TA %s matched a trust anchor; certificate valid for %s", rec.Params(), name)
				return nil
			}
		}
		return fmt.Errorf("TLSA %s: certificate names %v do not match %s", rec.Params(), certNames(chain[0]), strings.Join(nonEmpty(v.names), " or "))
	}
	return lastErr
}

// anchorFromData builds a trust anchor from a "2 0 0" (full certificate)
// or "2 1 0" (full public key) record. For a bare key, the anchor is a
// stand-in CA certificate with that key and the subject of the top of the
// chain's issuer, so that path building can end at it.
func anchorFromData(rec TLSARecord, chain []*x509.Certificate) *x509.Certificate {
	switch rec.Selector {
	case SelectorCert:
		c, err := x509.ParseCertificate(rec.Data)
		if err != nil {
			return nil
		}
		return c
	case SelectorSPKI:
		pub, err := x509.ParsePKIXPublicKey(rec.Data)
		if err != nil {
			return nil
		}
		top := chain[len(chain)-1]
		stand := &x509.Certificate{
			Raw:                   rec.Data,
			RawSubject:            top.RawIssuer,
			Subject:               top.Issuer,
			SubjectKeyId:          top.AuthorityKeyId,
			PublicKey:             pub,
			PublicKeyAlgorithm:    publicKeyAlgorithm(top.PublicKeyAlgorithm, pub),
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLen:            -1, // no path length limit of its own
			Version:               3,
			NotBefore:             time.Unix(0, 0),
			NotAfter:              time.Unix(1<<40, 0),
		}
		if top.CheckSignatureFrom(stand) != nil {
			return nil
		}
		return stand
	}
	return nil
}

func publicKeyAlgorithm(fallback x509.PublicKeyAlgorithm, pub any) x509.PublicKeyAlgorithm {
	switch pub.(type) {
	case *rsa.PublicKey:
		return x509.RSA
	case *ecdsa.PublicKey:
		return x509.ECDSA
	case ed25519.PublicKey:
		return x509.Ed25519
	}
	return fallback
}

// matchCert reports whether rec's data matches cert under rec's selector
// and matching type.
func matchCert(rec TLSARecord, cert *x509.Certificate) bool {
	var data []byte
	switch rec.Selector {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch rec.MatchingType {
	case MatchFull:
		return bytes.Equal(data, rec.Data)
	case MatchSHA256:
		h := sha256.Sum256(data)
		return bytes.Equal(h[:], rec.Data)
	case MatchSHA512:
		h := sha512.Sum512(data)
		return bytes.Equal(h[:], rec.Data)
	}
	return false
}

func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	return []string{c.Subject.CommonName}
}

func nonEmpty(s []string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}
