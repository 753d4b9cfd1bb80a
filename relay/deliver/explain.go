package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/relaysec/relay/relay/smtpclient"
	"github.com/relaysec/relay/secpolicy"
)

// Explanation is what the engine would do for a recipient domain, for
// `relayctl policy lookup`: the MX hosts in order and, per host, its
// addresses and the security policy that would apply, and why.
type Explanation struct {
	Domain     string          `json:"domain"`
	Route      *Route          `json:"route,omitempty"`
	MXSecurity string          `json:"mx_security,omitempty"` // secure | insecure
	Error      string          `json:"error,omitempty"`       // MX lookup failure: the domain is deferred
	Verdict    string          `json:"verdict,omitempty"`     // NXDOMAIN, null MX: the domain fails
	MTASTS     *ExplainedSTS   `json:"mta_sts,omitempty"`
	Hosts      []ExplainedHost `json:"hosts,omitempty"`
}

// ExplainedSTS is the MTA-STS state of a domain.
type ExplainedSTS struct {
	ID         string    `json:"id,omitempty"`
	Mode       string    `json:"mode,omitempty"` // "" when the domain has no policy in force
	MX         []string  `json:"mx,omitempty"`
	MaxAge     int64     `json:"max_age,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
	FromCache  bool      `json:"from_cache,omitempty"`
	FetchError string    `json:"fetch_error,omitempty"`
	DNSError   string    `json:"dns_error,omitempty"`
}

// ExplainedHost is one MX host of an Explanation.
type ExplainedHost struct {
	Host         string          `json:"host"`
	Preference   int             `json:"preference"`
	Addrs        []string        `json:"addrs,omitempty"`
	AddrSecurity string          `json:"addr_security,omitempty"`
	Policy       string          `json:"policy,omitempty"`     // dane, dane-unauth, opportunistic, ...
	STSListed    *bool           `json:"sts_listed,omitempty"` // matches the MTA-STS policy's mx patterns
	Reason       string          `json:"reason,omitempty"`
	Error        string          `json:"error,omitempty"` // the host would be skipped
	TLSAName     string          `json:"tlsa_name,omitempty"`
	TLSABase     string          `json:"tlsa_base,omitempty"`
	TLSA         []ExplainedTLSA `json:"tlsa,omitempty"`
	Probe        *Probe          `json:"probe,omitempty"`
}

// ExplainedTLSA is one TLSA record and its verdict.
type ExplainedTLSA struct {
	Record   string `json:"record"`
	Usable   bool   `json:"usable"`
	Unusable string `json:"unusable,omitempty"`
}

// Probe is the outcome of connecting to a host without sending mail.
type Probe struct {
	IP           string `json:"ip"`
	Greeting     string `json:"greeting,omitempty"`
	STARTTLS     bool   `json:"starttls"`
	TLSVersion   string `json:"tls_version,omitempty"`
	TLSCipher    string `json:"tls_cipher,omitempty"`
	Verification string `json:"verification,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Explain resolves domain as a delivery would and reports the policy of
// each host. With probe, it also connects to the first address of each
// host, runs STARTTLS with that policy's verification and quits without
// sending mail.
func (e *Engine) Explain(ctx context.Context, domain string, probe bool) (*Explanation, error) {
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if domain == "" {
		return nil, errors.New("no domain given")
	}
	ex := &Explanation{Domain: domain}
	route, hasRoute := e.route(domain)
	if hasRoute {
		ex.Route = &route
	}
	type hostPref struct {
		name string
		pref int
	}
	var hosts []hostPref
	port, mxSecure := e.opts.Port, false
	if route.NextHop != "" {
		h, p := e.hostPort(route.NextHop)
		hosts, port, mxSecure = []hostPref{{h, 0}}, p, true
		ex.MXSecurity = "next hop from configuration"
	} else {
		mx, err := e.opts.Resolver.LookupMX(ctx, domain)
		switch {
		case err != nil:
			ex.Error = "MX lookup failed: " + err.Error() + "; delivery to this domain is deferred"
			return ex, nil
		case mx.NoDomain:
			ex.Verdict = "the domain does not exist (NXDOMAIN): mail to it fails with 5.1.2"
			return ex, nil
		case mx.NullMX:
			ex.Verdict = "null MX (RFC 7505): the domain accepts no mail; mail to it fails with 5.1.10"
			return ex, nil
		}
		mxSecure = mx.Security == secpolicy.Secure
		ex.MXSecurity = mx.Security.String()
		for _, h := range mx.Hosts {
			hosts = append(hosts, hostPref{h.Name, int(h.Preference)})
		}
	}
	var sts *secpolicy.STSPolicy
	if e.opts.MTASTS != nil && (route.NextHop == "" || route.Security == secpolicy.SecurityMTASTSOrDANE) {
		ex.MTASTS = &ExplainedSTS{}
		res, err := e.opts.MTASTS.Get(ctx, domain)
		switch {
		case err != nil:
			ex.MTASTS.DNSError = err.Error()
		default:
			if res.FetchError != nil {
				ex.MTASTS.FetchError = res.FetchError.Error()
			}
			if res.DNSError != nil {
				ex.MTASTS.DNSError = res.DNSError.Error()
			}
			if p := res.Policy; p != nil {
				ex.MTASTS.ID, ex.MTASTS.Mode, ex.MTASTS.MX = res.ID, string(p.Mode), p.MX
				ex.MTASTS.MaxAge, ex.MTASTS.Expires, ex.MTASTS.FromCache = int64(p.MaxAge/time.Second), res.Expires, res.FromCache
				sts = &secpolicy.STSPolicy{Mode: string(p.Mode), ID: res.ID, Match: p.MatchMX}
			}
		}
	}
	for _, h := range hosts {
		eh := ExplainedHost{Host: trimDot(h.name), Preference: h.pref}
		if sts != nil && sts.Mode != secpolicy.STSModeNone {
			listed := sts.Match(eh.Host)
			eh.STSListed = &listed
		}
		ha, err := e.opts.Resolver.LookupHost(ctx, h.name)
		if err != nil || len(ha.Addrs) == 0 {
			eh.Error = "no usable address: the host is skipped"
			if err != nil {
				eh.Error = "address lookup failed: " + err.Error() + "; the host is skipped"
			}
			ex.Hosts = append(ex.Hosts, eh)
			continue
		}
		eh.AddrSecurity = ha.Security.String()
		for _, a := range ha.Addrs {
			eh.Addrs = append(eh.Addrs, a.String())
		}
		hp, err := e.opts.Policy.ForHost(ctx, secpolicy.Destination{
			Domain: domain, Host: h.name, Port: e.tlsaPort(route, port), Security: route.Security,
			MXSecure: mxSecure, HostSecure: ha.Security == secpolicy.Secure, STS: sts,
		})
		if err != nil {
			eh.Error = err.Error() + "; the host is skipped"
			ex.Hosts = append(ex.Hosts, eh)
			continue
		}
		eh.Policy, eh.Reason = string(hp.Kind), hp.Reason
		if hp.TLSA != nil {
			eh.TLSAName, eh.TLSABase = trimDot(hp.TLSA.Name), trimDot(hp.TLSA.BaseDomain)
			for _, r := range hp.TLSA.Records {
				eh.TLSA = append(eh.TLSA, ExplainedTLSA{Record: r.String(), Usable: r.Unusable == "", Unusable: r.Unusable})
			}
		}
		if probe {
			eh.Probe = e.probe(ctx, net.JoinHostPort(ha.Addrs[0].String(), strconv.Itoa(port)), hp)
		}
		ex.Hosts = append(ex.Hosts, eh)
	}
	return ex, nil
}

// probe connects, runs STARTTLS under hp and quits.
func (e *Engine) probe(ctx context.Context, addr string, hp secpolicy.HostPolicy) *Probe {
	pr := &Probe{IP: addr}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := e.opts.Dial(ctx, "tcp", addr)
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	c, err := smtpclient.New(ctx, conn, e.opts.Hostname, e.opts.Timeouts)
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	defer c.Quit()
	if g := c.Greeting(); g != nil {
		pr.Greeting = g.Error()
	}
	_, pr.STARTTLS = c.Extension("STARTTLS")
	if hp.TLSConfig == nil || !pr.STARTTLS {
		if hp.RequireTLS {
			pr.Error = "STARTTLS not offered, but policy " + string(hp.Kind) + " requires TLS: delivery would fail"
		}
		return pr
	}
	if err := c.StartTLS(ctx, hp.TLSConfig); err != nil {
		pr.Error = err.Error()
		return pr
	}
	if st, ok := c.TLSState(); ok {
		pr.TLSVersion = tls.VersionName(st.Version)
		pr.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
	}
	switch {
	case hp.Verified() != "":
		pr.Verification = "ok: " + hp.Verified()
	case hp.Authenticated:
		pr.Verification = "ok: " + hp.Reason
	default:
		pr.Verification = "not checked (" + string(hp.Kind) + ")"
	}
	return pr
}
