package secpolicy

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

// FuzzTLSA feeds arbitrary TLSA RDATA (wire form, as a resolver hands it
// over) through unpacking, the usability check of RFC 7672 §3.1.3 and
// verification against a real certificate chain. Nothing may panic; a
// record judged usable has a known usage, selector and matching type with
// data of the right length; a verification that succeeds was authenticated
// by a record that really matches the chain.
// Run with: go test -fuzz=FuzzTLSA ./secpolicy/
func FuzzTLSA(f *testing.F) {
	ca := testnet.NewCA(f)
	cert := ca.Issue("mx.example.test")
	chain := []*x509.Certificate{cert.Leaf, ca.Intermediate()}
	spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	full512 := sha512.Sum512(cert.Leaf.Raw)
	inter := sha256.Sum256(ca.Intermediate().Raw)
	seed := func(u, s, m byte, data []byte) { f.Add(append([]byte{u, s, m}, data...)) }
	seed(3, 1, 1, spki[:])
	seed(3, 0, 2, full512[:])
	seed(2, 0, 1, inter[:])
	seed(2, 0, 0, ca.Intermediate().Raw)
	seed(2, 1, 0, ca.Intermediate().RawSubjectPublicKeyInfo)
	seed(2, 1, 0, ca.Certificate().RawSubjectPublicKeyInfo)
	seed(3, 1, 0, cert.Leaf.RawSubjectPublicKeyInfo)
	seed(1, 1, 1, spki[:])
	seed(3, 2, 1, spki[:])
	seed(3, 1, 3, spki[:])
	seed(3, 1, 1, spki[:5])
	f.Add([]byte{3, 1})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, rdata []byte) {
		if len(rdata) > 0xffff-16 {
			return
		}
		// A whole RR in wire form: root owner name, TYPE TLSA, CLASS IN,
		// TTL 300, RDLENGTH, RDATA.
		msg := []byte{0}
		msg = binary.BigEndian.AppendUint16(msg, dns.TypeTLSA)
		msg = binary.BigEndian.AppendUint16(msg, dns.ClassINET)
		msg = binary.BigEndian.AppendUint32(msg, 300)
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(rdata)))
		msg = append(msg, rdata...)
		rr, _, err := dns.UnpackRR(msg, 0)
		if err != nil {
			return
		}
		tlsa, ok := rr.(*dns.TLSA)
		if !ok {
			t.Fatalf("TLSA unpacked as %T", rr)
		}
		rec := newTLSARecord(tlsa)
		_ = rec.String()
		_ = rec.Params()
		if rec.Unusable == "" {
			if rec.Usage != UsageDANETA && rec.Usage != UsageDANEEE {
				t.Fatalf("usage %d judged usable", rec.Usage)
			}
			if rec.Selector > SelectorSPKI || rec.MatchingType > MatchSHA512 || len(rec.Data) == 0 {
				t.Fatalf("record %s judged usable", rec.Params())
			}
			if rec.MatchingType == MatchSHA256 && len(rec.Data) != sha256.Size ||
				rec.MatchingType == MatchSHA512 && len(rec.Data) != sha512.Size {
				t.Fatalf("record %s with %d bytes judged usable", rec.Params(), len(rec.Data))
			}
			if hex.EncodeToString(rec.Data) != tlsa.Certificate && len(tlsa.Certificate) != 0 &&
				hex.EncodeToString(rec.Data) != toLower(tlsa.Certificate) {
				t.Fatalf("data %x from certificate field %q", rec.Data, tlsa.Certificate)
			}
		}
		// The presentation form goes through the text parser too.
		if rr2, err := dns.NewRR(tlsa.String()); err == nil {
			if t2, ok := rr2.(*dns.TLSA); ok {
				if r2 := newTLSARecord(t2); (r2.Unusable == "") != (rec.Unusable == "") {
					t.Fatalf("usable %v after a round trip through text, %v before", r2.Unusable == "", rec.Unusable == "")
				}
			}
		}
		if rec.Unusable != "" {
			return
		}
		v := &daneVerifier{records: []TLSARecord{rec}, names: []string{"mx.example.test"}, now: time.Now}
		err = v.verify(tls.ConnectionState{PeerCertificates: chain})
		if err == nil {
			if v.matched == "" {
				t.Fatal("verify succeeded without saying what matched")
			}
			if rec.Usage == UsageDANEEE && !matchCert(rec, chain[0]) {
				t.Fatalf("DANE-EE %s accepted a leaf it does not match", rec.Params())
			}
		} else if _, ok := err.(*DANEError); !ok {
			t.Fatalf("verify error %T %v, want a *DANEError", err, err)
		}
		// An empty chain never verifies.
		if v.verify(tls.ConnectionState{}) == nil {
			t.Fatal("verify accepted a server without a certificate")
		}
	})
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
