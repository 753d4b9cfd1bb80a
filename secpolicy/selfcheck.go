package secpolicy

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Names queried by CheckValidation.
const (
	// ValidationProbeSigned is a name whose answer a validating resolver
	// marks as authenticated: the SOA of the root zone, signed since 2010.
	ValidationProbeSigned = "."
	// ValidationProbeBogus is a name whose DNSSEC signatures are broken on
	// purpose (kept so by Comcast for such checks): a validating resolver
	// answers SERVFAIL, a non-validating one its address.
	ValidationProbeBogus = "dnssec-failed.org."
)

// Validation is what CheckValidation found out about the resolver.
type Validation int

const (
	// ValidationUnknown: the check could not tell (no answer, no internet
	// access, answers that prove nothing).
	ValidationUnknown Validation = iota
	// ValidationOK: the resolver sets AD on a signed answer and refuses a
	// bogus one.
	ValidationOK
	// ValidationOff: the resolver does not validate DNSSEC; no answer is
	// ever secure, so DANE never applies.
	ValidationOff
	// ValidationNoAD: the resolver refuses bogus answers but does not set
	// the AD bit on valid ones, so the relay cannot tell validated answers
	// and DANE never applies.
	ValidationNoAD
)

// String returns a short name of v: unknown, ok, off or no-ad.
func (v Validation) String() string {
	switch v {
	case ValidationOK:
		return "ok"
	case ValidationOff:
		return "off"
	case ValidationNoAD:
		return "no-ad"
	}
	return "unknown"
}

// ValidationCheck is the result of CheckValidation.
type ValidationCheck struct {
	// Result is the verdict.
	Result Validation
	// Detail says what the resolver answered to each probe, such as
	// `". SOA: AD set; dnssec-failed.org. A: SERVFAIL"`.
	Detail string
}

// CheckValidation finds out whether the resolver validates DNSSEC, by
// asking it for the root zone's SOA (which must come back with the AD bit)
// and for ValidationProbeBogus (which must fail with SERVFAIL). Both
// queries bypass the cache and go out at once; ctx bounds them. Without
// internet access the answer is ValidationUnknown: a resolver that cannot
// reach the root fails both queries alike.
//
// The raw AD bit is looked at whether or not the relay trusts it
// (TrustsAD): the check is about the resolver, not about the relay's
// configuration.
func (r *Resolver) CheckValidation(ctx context.Context) ValidationCheck {
	type probe struct {
		resp *dns.Msg
		err  *LookupError
	}
	var signed, bogus probe
	var wg sync.WaitGroup
	wg.Go(func() { signed.resp, signed.err = r.exchange(ctx, ValidationProbeSigned, dns.TypeSOA) })
	wg.Go(func() { bogus.resp, bogus.err = r.exchange(ctx, ValidationProbeBogus, dns.TypeA) })
	wg.Wait()

	describe := func(name string, qtype uint16, p probe) string {
		q := strings.TrimSuffix(name, ".")
		if q == "" {
			q = "."
		}
		q += " " + dns.TypeToString[qtype] + ": "
		switch {
		case p.err != nil && p.err.Rcode >= 0:
			return q + dns.RcodeToString[p.err.Rcode]
		case p.err != nil:
			return q + p.err.Err.Error()
		case p.resp.Rcode != dns.RcodeSuccess:
			return q + dns.RcodeToString[p.resp.Rcode]
		case p.resp.AuthenticatedData:
			return fmt.Sprintf("%s%d record(s), AD set", q, len(p.resp.Answer))
		}
		return fmt.Sprintf("%s%d record(s), AD not set", q, len(p.resp.Answer))
	}
	detail := describe(ValidationProbeSigned, dns.TypeSOA, signed) + "; " + describe(ValidationProbeBogus, dns.TypeA, bogus)

	bogusRefused := bogus.err != nil && bogus.err.Rcode == dns.RcodeServerFailure
	bogusAnswered := bogus.err == nil && bogus.resp.Rcode == dns.RcodeSuccess && len(rrsOf(bogus.resp.Answer, ValidationProbeBogus, dns.TypeA)) > 0
	signedOK := signed.err == nil && signed.resp.Rcode == dns.RcodeSuccess && len(signed.resp.Answer) > 0
	switch {
	case !signedOK:
		// Without the root's SOA nothing is known: no internet access,
		// a resolver that refuses us, or a timeout.
		return ValidationCheck{Result: ValidationUnknown, Detail: detail}
	case bogusAnswered:
		// It hands out data whose signatures are broken: it does not
		// validate, whatever it says in the AD bit.
		return ValidationCheck{Result: ValidationOff, Detail: detail}
	case signed.resp.AuthenticatedData && bogusRefused:
		return ValidationCheck{Result: ValidationOK, Detail: detail}
	case !signed.resp.AuthenticatedData && bogusRefused:
		return ValidationCheck{Result: ValidationNoAD, Detail: detail}
	case !signed.resp.AuthenticatedData:
		// No AD on the signed root: whatever it does with bogus data,
		// the relay never sees a validated answer.
		return ValidationCheck{Result: ValidationOff, Detail: detail}
	}
	// AD on the root, but the bogus probe gave something that proves
	// nothing (NXDOMAIN from a rewriting resolver, a timeout).
	return ValidationCheck{Result: ValidationUnknown, Detail: detail}
}
