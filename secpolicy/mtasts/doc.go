// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): discovery of a domain's policy through its
// "_mta-sts" TXT record (LookupID), the HTTPS fetch of the policy file
// (Fetcher), its parser (Parse), a persistent policy cache in bbolt (Cache)
// and the Manager that applies the caching rules of RFC 8461 §3.3 and §5.1
// on top of them (checklist items STS01–STS11, STS13, STS15, STS17).
//
// Applying a policy to a connection (STS12, STS14, STS16) is the delivery
// code's job: it asks Manager.Get for the domain's policy, filters MX hosts
// with Policy.MatchMX and verifies certificates against the Web PKI.
//
// Domain and host names are handled in ASCII (A-label) form, lowercase and
// without a trailing dot.
package mtasts
