package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Fixed addresses inside the suite's /24 of 127.0.0.0/8; receiving hosts
// get .100 and up, in table order.
const (
	ipRelaySMTP  = 1  // relay intake
	ipNSD        = 2  // authoritative server for test.
	ipRelayHTTPS = 3  // relay [inbound] (MTA-STS policies)
	ipNginx      = 4  // nginx (MTA-STS policies)
	ipPostfixRef = 5  // reference Postfix (sending side) intake
	ipUnbound    = 53 // validating resolver
	ipSink       = 99 // the sender domain's MX (DSNs)
	ipFirstHost  = 100
)

const ttl = 60

// layout is everything gen derives from the scenario table.
type layout struct {
	net   string // "127.77.0"
	hosts []*Host
	ip    map[string]string // host name -> address
	// zones: name -> signed; parent of every zone but test. is test.
	zones map[string]bool
}

func newLayout(net string) (*layout, error) {
	l := &layout{net: net, ip: map[string]string{}, zones: map[string]bool{
		"test": true, zoneHosts: true, zoneUnsignedHosts: false, senderDomain: true,
	}}
	add := func(h *Host) error {
		if _, ok := l.ip[h.Name]; ok {
			return fmt.Errorf("host %s used twice", h.Name)
		}
		n := ipFirstHost + len(l.hosts)
		if n > 254 {
			return fmt.Errorf("too many hosts for one /24")
		}
		l.ip[h.Name] = fmt.Sprintf("%s.%d", net, n)
		l.hosts = append(l.hosts, h)
		return nil
	}
	ids := map[string]bool{}
	for _, s := range scenarios {
		if ids[s.ID] {
			return nil, fmt.Errorf("scenario %s defined twice", s.ID)
		}
		ids[s.ID] = true
		l.zones[s.Domain()] = s.Signed
		for i := range s.MX {
			if err := add(&s.MX[i]); err != nil {
				return nil, err
			}
		}
		if s.Decoy != nil {
			if err := add(s.Decoy); err != nil {
				return nil, err
			}
		}
	}
	l.ip[sinkHost] = fmt.Sprintf("%s.%d", net, ipSink)
	return l, nil
}

func (l *layout) addr(n int) string { return fmt.Sprintf("%s.%d", l.net, n) }

// zoneOf is the zone that holds name: the longest zone suffix.
func (l *layout) zoneOf(name string) string {
	best := ""
	for z := range l.zones {
		if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// pki holds the test CA and the key nobody uses.
type pki struct {
	dir    string
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	other  *ecdsa.PrivateKey
	now    time.Time
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func newPKI(dir string) (*pki, error) {
	p := &pki{dir: dir, caKey: newKey(), other: newKey(), now: time.Now()}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Relay Interop Test CA", Organization: []string{"relay interop suite"}},
		NotBefore:             p.now.Add(-time.Hour),
		NotAfter:              p.now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	return p, writeFile(filepath.Join(dir, "ca.crt"), pemBlock("CERTIFICATE", der))
}

// leaf makes a server certificate. kind is certCA, certCAWrong,
// certCANextHp, certSelf or certExpired; names[0] is the host name and
// names[1], when present, the recipient domain.
func (p *pki) leaf(kind string, names ...string) (key *ecdsa.PrivateKey, chain []*x509.Certificate, err error) {
	key = newKey()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    p.now.Add(-time.Hour),
		NotAfter:     p.now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	dns := []string{names[0]}
	switch kind {
	case certCAWrong:
		dns = []string{"wrong.invalid-name.test"}
	case certCANextHp:
		dns = []string{names[1]}
	case certExpired:
		dns = []string{"expired.invalid-name.test"}
		tmpl.NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		tmpl.NotAfter = time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)
	}
	tmpl.Subject = pkix.Name{CommonName: dns[0]}
	tmpl.DNSNames = dns
	parent, signer := p.caCert, any(p.caKey)
	if kind == certSelf || kind == certExpired {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	chain = []*x509.Certificate{c}
	if parent == p.caCert {
		chain = append(chain, p.caCert)
	}
	return key, chain, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func chainPEM(chain []*x509.Certificate) []byte {
	var b []byte
	for _, c := range chain {
		b = append(b, pemBlock("CERTIFICATE", c.Raw)...)
	}
	return b
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Test keys only: daemons that drop privileges must be able to read them.
	return os.WriteFile(path, data, 0o644)
}

// tlsaRData is the presentation of one TLSA spec for a host certificate.
func (p *pki) tlsaRData(spec string, leaf *x509.Certificate) string {
	var data []byte
	switch spec {
	case tlsaEEOwn, tlsaPKIXEE:
		h := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		data = h[:]
	case tlsaEEOwn302:
		h := sha512.Sum512(leaf.Raw)
		data = h[:]
	case tlsaEEOther:
		spki, err := x509.MarshalPKIXPublicKey(&p.other.PublicKey)
		if err != nil {
			panic(err)
		}
		h := sha256.Sum256(spki)
		data = h[:]
	case tlsaTACA:
		h := sha256.Sum256(p.caCert.Raw)
		data = h[:]
	default:
		panic("unknown TLSA spec " + spec)
	}
	f := strings.Fields(spec)
	return fmt.Sprintf("%s %s %s %s", f[0], f[1], f[2], hex.EncodeToString(data))
}

// gen writes the suite's generated files under dir.
func gen(dir, net string) error {
	l, err := newLayout(net)
	if err != nil {
		return err
	}
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	records := map[string][]string{} // zone -> lines
	rr := func(name, typ, data string) {
		z := l.zoneOf(name)
		records[z] = append(records[z], fmt.Sprintf("%s.\t%d\tIN\t%s\t%s", name, ttl, typ, data))
	}
	var bogus []string
	var services []string

	// Receiving hosts: address, smtpd service with its certificate, TLSA.
	hostDomain := map[string]string{}
	for _, s := range scenarios {
		for _, h := range s.MX {
			hostDomain[h.Name] = s.Domain()
		}
	}
	for _, h := range l.hosts {
		ip := l.ip[h.Name]
		tlsaName := "_25._tcp." + h.Name
		if h.Target != "" {
			rr(h.Name, "CNAME", h.Target+".")
			rr(h.Target, "A", ip)
			tlsaName = "_25._tcp." + h.Target
		} else {
			rr(h.Name, "A", ip)
		}
		svc := fmt.Sprintf("%s:25\tinet\tn\t-\tn\t-\t-\tsmtpd\n  -o myhostname=%s", ip, h.Name)
		if h.Cert == certNone {
			svc += "\n  -o smtpd_tls_security_level=none"
			// TLSA records of a server without STARTTLS: made from a
			// certificate that is never served.
			_, chain, err := p.leaf(certSelf, h.Name)
			if err != nil {
				return err
			}
			for _, spec := range h.TLSA {
				rr(tlsaName, "TLSA", p.tlsaRData(spec, chain[0]))
			}
		} else {
			key, chain, err := p.leaf(h.Cert, h.Name, hostDomain[h.Name])
			if err != nil {
				return err
			}
			file := filepath.Join(p.dir, "hosts", h.Name+".pem")
			if err := writeFile(file, append(keyPEM(key), chainPEM(chain)...)); err != nil {
				return err
			}
			svc += "\n  -o smtpd_tls_security_level=may\n  -o smtpd_tls_chain_files=" + file
			for _, spec := range h.TLSA {
				rr(tlsaName, "TLSA", p.tlsaRData(spec, chain[0]))
			}
			for _, spec := range h.OrigTLSA {
				rr("_25._tcp."+h.Name, "TLSA", p.tlsaRData(spec, chain[0]))
			}
		}
		if h.BogusTLSA {
			bogus = append(bogus, fmt.Sprintf("%s %s TLSA", l.zoneOf(tlsaName), tlsaName))
		}
		services = append(services, svc)
	}
	rr(sinkHost, "A", l.ip[sinkHost])
	rr(senderDomain, "MX", "10 "+sinkHost+".")
	services = append(services, fmt.Sprintf("%s:25\tinet\tn\t-\tn\t-\t-\tsmtpd\n  -o myhostname=%s\n  -o smtpd_tls_security_level=none",
		l.ip[sinkHost], sinkHost))

	// Scenario domains: MX, MTA-STS.
	var relaySTS, nginxServers []string
	var relayNames, nginxNames []string
	for _, s := range scenarios {
		d := s.Domain()
		switch {
		case s.NullMX:
			rr(d, "MX", "0 .")
		default:
			for _, h := range s.MX {
				rr(d, "MX", fmt.Sprintf("%d %s.", h.Pref, h.Name))
			}
		}
		if s.BogusMX {
			bogus = append(bogus, fmt.Sprintf("%s %s MX", d, d))
		}
		if s.STS == nil {
			continue
		}
		host := "mta-sts." + d
		rr("_mta-sts."+d, "TXT", `"v=STSv1; id=interop1"`)
		policy := "version: STSv1\r\nmode: " + s.STS.Mode + "\r\n"
		for _, m := range s.STS.MX {
			policy += "mx: " + m + "\r\n"
		}
		policy += "max_age: 86400\r\n"
		switch s.STS.Server {
		case "relay":
			rr(host, "A", l.addr(ipRelayHTTPS))
			relayNames = append(relayNames, host)
			t := fmt.Sprintf("[[inbound.mta_sts]]\ndomain = %q\nmode = %q\nmax_age = 86400\n", d, s.STS.Mode)
			if len(s.STS.MX) > 0 {
				t += fmt.Sprintf("mx = [%s]\n", quoteList(s.STS.MX))
			}
			relaySTS = append(relaySTS, t)
		case "nginx":
			rr(host, "A", l.addr(ipNginx))
			nginxNames = append(nginxNames, host)
			www := filepath.Join(dir, "www", host)
			if err := writeFile(filepath.Join(www, ".well-known", "mta-sts.txt"), []byte(policy)); err != nil {
				return err
			}
			nginxServers = append(nginxServers, fmt.Sprintf(`server {
  listen %s:443 ssl;
  server_name %s;
  ssl_certificate %s/mta-sts-nginx.crt;
  ssl_certificate_key %s/mta-sts-nginx.key;
  root %s;
  location = /.well-known/mta-sts.txt { }
  location / { return 404; }
}
`, l.addr(ipNginx), host, p.dir, p.dir, www))
		default:
			return fmt.Errorf("scenario %s: unknown policy server %q", s.ID, s.STS.Server)
		}
	}
	for _, x := range []struct {
		name  string
		names []string
	}{{"mta-sts-relay", relayNames}, {"mta-sts-nginx", nginxNames}} {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: x.names[0]}, DNSNames: x.names,
			NotBefore: p.now.Add(-time.Hour), NotAfter: p.now.Add(7 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(p.dir, x.name+".key"), keyPEM(key)); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(p.dir, x.name+".crt"), append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", p.caCert.Raw)...)); err != nil {
			return err
		}
	}

	// Zones: every zone but test. is a child of test.; signed children get
	// a DS there (added by run.sh after signing), unsigned ones only NS.
	names := make([]string, 0, len(l.zones))
	for z := range l.zones {
		names = append(names, z)
	}
	sort.Strings(names)
	var zlist []string
	for _, z := range names {
		head := fmt.Sprintf("$TTL %d\n%s.\tIN\tSOA\tns.test. hostmaster.test. %d 3600 600 86400 10\n%s.\tIN\tNS\tns.test.\n",
			ttl, z, p.now.Unix(), z)
		if z == "test" {
			head += fmt.Sprintf("ns.test.\tIN\tA\t%s\n", l.addr(ipNSD))
			for _, c := range names {
				if c != "test" {
					head += fmt.Sprintf("%s.\tIN\tNS\tns.test.\n", c)
				}
			}
		} else {
			signed := "unsigned"
			if l.zones[z] {
				signed = "signed"
			}
			zlist = append(zlist, z+" "+signed)
		}
		body := records[z]
		slices.Sort(body)
		if err := writeFile(filepath.Join(dir, "zones", z+".zone"), []byte(head+strings.Join(body, "\n")+"\n")); err != nil {
			return err
		}
	}
	zlist = append(zlist, "test signed") // the parent last: it needs the children's DS
	files := map[string]string{
		"zones.txt":           strings.Join(zlist, "\n") + "\n",
		"bogus.txt":           strings.Join(bogus, "\n") + "\n",
		"rcv-master.cf":       strings.Join(services, "\n") + "\n",
		"rcv-domains.txt":     strings.Join(append(domains(), senderDomain), ", ") + "\n",
		"relay-sts.toml":      strings.Join(relaySTS, "\n"),
		"nginx-servers.conf":  strings.Join(nginxServers, "\n"),
		"scenarios.tsv":       scenarioTSV(),
		"nsd-zones.conf":      nsdZones(dir, names),
		"receiver-hosts.txt":  hostList(l),
		"dns-checks.txt":      dnsChecks(),
		"relay-sts-names.txt": strings.Join(relayNames, " ") + "\n",
	}
	for name, data := range files {
		if err := writeFile(filepath.Join(dir, name), []byte(data)); err != nil {
			return err
		}
	}
	return nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

func domains() []string {
	var d []string
	for _, s := range scenarios {
		d = append(d, s.Domain())
	}
	return d
}

func scenarioTSV() string {
	var b strings.Builder
	for _, s := range scenarios {
		fmt.Fprintf(&b, "%s\t%s\tuser@%s\n", s.ID, s.Domain(), s.Domain())
	}
	return b.String()
}

func nsdZones(dir string, names []string) string {
	var b strings.Builder
	for _, z := range names {
		fmt.Fprintf(&b, "zone:\n  name: %s.\n  zonefile: %s\n", z, filepath.Join(dir, "zones", z+".zone.served"))
	}
	return b.String()
}

func hostList(l *layout) string {
	var b strings.Builder
	for _, h := range l.hosts {
		fmt.Fprintf(&b, "%s %s %s\n", l.ip[h.Name], h.Name, h.Cert)
	}
	fmt.Fprintf(&b, "%s %s %s\n", l.ip[sinkHost], sinkHost, certNone)
	return b.String()
}

// dnsChecks are what run.sh verifies with dig before sending anything:
// "name type expectation" with expectation secure, insecure or servfail.
func dnsChecks() string {
	var b strings.Builder
	for _, s := range scenarios {
		d := s.Domain()
		switch {
		case s.BogusMX:
			fmt.Fprintf(&b, "%s MX servfail\n", d)
		case s.Signed:
			fmt.Fprintf(&b, "%s MX secure\n", d)
		default:
			fmt.Fprintf(&b, "%s MX insecure\n", d)
		}
		for _, h := range s.MX {
			if len(h.TLSA) == 0 {
				continue
			}
			name := h.Name
			if h.Target != "" {
				name = h.Target
			}
			want := "secure"
			switch {
			case h.BogusTLSA:
				want = "servfail"
			case strings.HasSuffix(name, "."+zoneUnsignedHosts) || (!s.Signed && strings.HasSuffix(name, "."+d)):
				want = "insecure"
			}
			fmt.Fprintf(&b, "_25._tcp.%s TLSA %s\n", name, want)
		}
	}
	return b.String()
}
