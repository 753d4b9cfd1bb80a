// Package testnet is the in-process test harness of the relay: a DNS server
// acting as a validating recursive resolver for a table of records
// (StartDNS), a test certificate authority (NewCA), SMTP receivers that
// record what they are sent (StartSMTP), and small network helpers
// (Refuse).
//
// Everything listens on loopback addresses (127.0.0.0/8) with free ports and
// is stopped by t.Cleanup; nothing reaches the network outside the machine.
// The package is meant for tests only, but its files are ordinary Go files
// so that the tests of every package can import it.
package testnet
