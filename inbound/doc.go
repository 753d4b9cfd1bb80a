// Package inbound is the relay's HTTPS listener for the domains it fronts:
// it serves their MTA-STS policies (RFC 8461 §3.2) at
// https://mta-sts.<domain>/.well-known/mta-sts.txt and mounts the TLS-RPT
// report endpoint (RFC 8460 §3) on the same host names.
//
// Policies are rendered once, when the Server is made, and served from
// memory. Certificates come from PEM files (several pairs, chosen by SNI,
// reloaded when the files change or on ReloadCertificates) or from ACME with
// TLS-ALPN-01 on the same listener, restricted to the configured names.
//
// The package also knows what must be published in DNS for a policy to
// work (DNSRecords, PolicyID) and can check a domain's published records
// live (Check).
//
// inbound does not import the rest of the relay: its callers map their
// configuration to Options and adapt their DNS resolver to Resolver.
package inbound
