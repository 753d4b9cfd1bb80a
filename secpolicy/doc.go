// Package secpolicy decides how a destination must be secured: it resolves
// the recipient domain's mail exchangers, learns the DNSSEC status of every
// answer from the configured validating resolver, and (in later pieces) turns
// DANE and MTA-STS data into a per-host policy.
//
// The DNS layer never validates signatures itself. It asks a resolver that
// the operator declares validating, sets the DO and AD bits, and trusts the
// AD bit of the answer only from that resolver (RFC 7672 §2.1, RFC 6840 §5.7).
// Every answer is secure, insecure, or an error; an error (SERVFAIL, timeout,
// malformed answer) is never turned into "insecure" or "no record".
//
// Host and domain names returned by this package are canonical: lowercase,
// fully qualified, with a trailing dot.
package secpolicy
