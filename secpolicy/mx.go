package secpolicy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// MXHost is one mail exchanger of a domain.
type MXHost struct {
	// Name is the canonical host name (lowercase, trailing dot).
	Name       string
	Preference uint16
	// Implicit is true when the domain has no MX records and the domain
	// itself is the mail exchanger (RFC 5321 §5.1).
	Implicit bool
}

// MXResult is the outcome of resolving a domain's mail exchangers.
type MXResult struct {
	// Domain is the canonical recipient domain.
	Domain string
	// Hosts are the exchangers to try, in preference order with equal
	// preferences shuffled (MX01). An implicit MX is the domain itself
	// (MX02). Hosts is empty for NullMX and NoDomain, and also when every
	// MX record names "." without forming a valid null MX: such a domain
	// has no usable exchanger.
	Hosts []MXHost
	// Security is the status of the MX RRset, or for an implicit MX the
	// weakest status of the domain's A/AAAA answers.
	Security Security
	// NullMX is true for a null MX ("MX 0 ." as the only record, RFC 7505):
	// a permanent failure, 5.1.10; no address lookups are made (MX03).
	NullMX bool
	// NoDomain is true when the domain does not exist (NXDOMAIN): a
	// permanent failure, 5.1.2 (MX02).
	NoDomain bool
}

// LookupMX resolves the mail exchangers of domain (RFC 5321 §5.1).
//
// An error means the MX lookup failed (SERVFAIL, bogus, timeout): the whole
// domain must be deferred, and the caller must never fall back to the
// domain's address records (MX04). For an implicit MX the domain's A/AAAA
// records are looked up to learn their security; when that fails too, an
// error is returned as well.
func (r *Resolver) LookupMX(ctx context.Context, domain string) (MXResult, error) {
	name, err := canonicalName(domain)
	if err != nil {
		return MXResult{}, fmt.Errorf("lookup MX: %w", err)
	}
	res := MXResult{Domain: name}
	ans, err := r.Lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return res, err // names the query already; never fall back to A/AAAA (MX04)
	}
	res.Security = ans.Security
	if ans.NXDomain {
		res.NoDomain = true
		return res, nil
	}

	var mxs []*dns.MX
	for _, rr := range ans.Records {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	if len(mxs) == 0 {
		// No MX RRset: the domain is its own, implicit, MX (RFC 5321 §5.1).
		// DANE needs the security of its address records (RFC 7672 §2.2.1).
		addrs, err := r.LookupHost(ctx, name)
		if err != nil {
			return res, fmt.Errorf("implicit MX %s: %w", name, err)
		}
		res.Security = addrs.Security
		res.Hosts = []MXHost{{Name: name, Implicit: true}}
		return res, nil
	}
	// RFC 7505 §3: a null MX is a single MX record with preference 0 and
	// the root as exchange.
	if len(mxs) == 1 && mxs[0].Preference == 0 && mxs[0].Mx == "." {
		res.NullMX = true
		return res, nil
	}

	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return int(a.Preference) - int(b.Preference) })
	seen := make(map[string]bool, len(mxs))
	for _, mx := range mxs {
		host := strings.ToLower(dns.Fqdn(mx.Mx))
		if host == "." || seen[host] {
			// "." among other records is not a null MX: ignore that entry.
			// A host listed twice keeps its best preference.
			continue
		}
		seen[host] = true
		res.Hosts = append(res.Hosts, MXHost{Name: host, Preference: mx.Preference})
	}
	shuffleEqualPreferences(res.Hosts)
	return res, nil
}

// shuffleEqualPreferences randomizes the order of hosts with the same
// preference (RFC 5321 §5.1); hosts must be sorted by preference.
func shuffleEqualPreferences(hosts []MXHost) {
	for start := 0; start < len(hosts); {
		end := start + 1
		for end < len(hosts) && hosts[end].Preference == hosts[start].Preference {
			end++
		}
		group := hosts[start:end]
		rand.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
		start = end
	}
}

// HostAddrs holds the addresses of one host.
type HostAddrs struct {
	// Host is the canonical host name.
	Host string
	// Addrs are the IPv4 addresses, then the IPv6 addresses. It may be
	// empty when both lookups succeeded without data.
	Addrs []netip.Addr
	// Security is the weakest status of the successful A and AAAA answers.
	Security Security
}

// LookupHost queries the A and AAAA records of host concurrently.
//
// A lookup that fails is ignored when the other one returned addresses.
// An error is returned when both lookups failed, or when one failed and the
// other returned no address: the caller must skip that host for this attempt
// (MX05). When both succeed without data, the result has no addresses and no
// error. A host that is an IP address literal (an MX misconfiguration that
// occurs in practice) yields that address, Insecure, without any query.
func (r *Resolver) LookupHost(ctx context.Context, host string) (HostAddrs, error) {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(host, ".")); err == nil {
		return HostAddrs{Host: ip.String(), Addrs: []netip.Addr{ip.Unmap()}, Security: Insecure}, nil
	}
	name, err := canonicalName(host)
	if err != nil {
		return HostAddrs{}, fmt.Errorf("addresses of host: %w", err)
	}
	var (
		wg      sync.WaitGroup
		answers [2]Answer
		errs    [2]error
	)
	for i, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Go(func() {
			answers[i], errs[i] = r.Lookup(ctx, name, qtype)
		})
	}
	wg.Wait()

	res := HostAddrs{Host: name, Security: Secure}
	succeeded := 0
	for i, a := range answers {
		if errs[i] != nil {
			continue
		}
		succeeded++
		res.Security = weakest(res.Security, a.Security)
		for _, rr := range a.Records {
			var ip netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				ip, _ = netip.AddrFromSlice(rr.A)
			case *dns.AAAA:
				ip, _ = netip.AddrFromSlice(rr.AAAA)
			}
			if ip = ip.Unmap(); ip.IsValid() && !slices.Contains(res.Addrs, ip) {
				res.Addrs = append(res.Addrs, ip)
			}
		}
	}
	switch {
	case succeeded == 0:
		return HostAddrs{Host: name}, fmt.Errorf("addresses of %s: %w; %w", name, errs[0], errs[1])
	case succeeded == 1 && len(res.Addrs) == 0:
		failed, other := errs[0], "AAAA"
		if failed == nil {
			failed, other = errs[1], "A"
		}
		return HostAddrs{Host: name}, fmt.Errorf("addresses of %s: no %s record and %w", name, other, failed)
	}
	return res, nil
}
