package testnet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// CA is an in-memory test certificate authority: a self-signed ECDSA P-256
// root and one intermediate CA signed by the root.
type CA struct {
	t        testing.TB
	root     *x509.Certificate
	key      *ecdsa.PrivateKey
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
}

// IssueOptions controls CA.IssueWith.
type IssueOptions struct {
	// Names are the DNS names (or IP addresses) of the certificate; the
	// first is also the subject common name.
	Names []string
	// NotBefore and NotAfter default to one hour ago and 24 hours from now.
	NotBefore, NotAfter time.Time
	// IncludeIntermediate signs the leaf with the CA's intermediate and
	// puts the intermediate into the chain after the leaf.
	IncludeIntermediate bool
	// IncludeRoot appends the root certificate to the chain.
	IncludeRoot bool
	// Key, when not nil, is the leaf's key (to issue several certificates
	// with the same public key); otherwise a new P-256 key is made.
	Key *ecdsa.PrivateKey
}

// NewCA creates a CA; it fails the test on error.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "Relay Test Root CA", Organization: []string{"relay tests"}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root := createCert(t, tmpl, tmpl, &key.PublicKey, key)

	interKey := newKey(t)
	interTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "Relay Test Intermediate CA", Organization: []string{"relay tests"}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	inter := createCert(t, interTmpl, root, &interKey.PublicKey, key)
	return &CA{t: t, root: root, key: key, inter: inter, interKey: interKey}
}

// Certificate returns the root certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.root }

// Intermediate returns the intermediate CA certificate, which signs the
// leaves issued with IncludeIntermediate.
func (ca *CA) Intermediate() *x509.Certificate { return ca.inter }

// Pool returns a pool holding the root certificate only.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// RootPEM returns the root certificate in PEM form.
func (ca *CA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
}

// Issue returns a leaf certificate for names signed directly by the root,
// valid from one hour ago to 24 hours from now. Its chain holds the leaf
// only; the root is available from Pool, RootPEM and Certificate.
func (ca *CA) Issue(names ...string) tls.Certificate {
	ca.t.Helper()
	return ca.IssueWith(IssueOptions{Names: names})
}

// IssueWith returns a leaf certificate as described by opts, with Leaf set.
func (ca *CA) IssueWith(opts IssueOptions) tls.Certificate {
	ca.t.Helper()
	parent, parentKey := ca.root, ca.key
	if opts.IncludeIntermediate {
		parent, parentKey = ca.inter, ca.interKey
	}
	key := opts.Key
	if key == nil {
		key = newKey(ca.t)
	}
	leaf := createCert(ca.t, leafTemplate(ca.t, opts), parent, &key.PublicKey, parentKey)
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	if opts.IncludeIntermediate {
		cert.Certificate = append(cert.Certificate, ca.inter.Raw)
	}
	if opts.IncludeRoot {
		cert.Certificate = append(cert.Certificate, ca.root.Raw)
	}
	return cert
}

// SelfSigned returns a self-signed leaf certificate for names, valid from
// one hour ago to 24 hours from now, with Leaf set.
func SelfSigned(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := leafTemplate(t, IssueOptions{Names: names})
	leaf := createCert(t, tmpl, tmpl, &key.PublicKey, key)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

func leafTemplate(t testing.TB, opts IssueOptions) *x509.Certificate {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    opts.NotBefore,
		NotAfter:     opts.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	for _, n := range opts.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if len(opts.Names) > 0 {
		tmpl.Subject.CommonName = opts.Names[0]
	}
	return tmpl
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testnet: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testnet: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("testnet: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testnet: parse certificate: %v", err)
	}
	return cert
}
