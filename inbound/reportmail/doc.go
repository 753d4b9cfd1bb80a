// Package reportmail receives TLS reports (RFC 8460) sent by email to the
// rua=mailto: addresses of a domain's _smtp._tls record (RFC 8460 §5.3.1),
// and finds reports in files an administrator imports.
//
// Server is an SMTP listener (github.com/emersion/go-smtp) that accepts mail
// only for the configured report mailboxes: every other recipient gets
// 550 5.1.1, so it is never a relay. Each message is parsed as MIME, its
// report parts are found (by media type application/tlsrpt+gzip or
// application/tlsrpt+json, or by an attachment name ending in .json,
// .json.gz or .zip), decompressed with bounded sizes, validated with
// tlsrpt.Parse and stored in the same tlsrpt.Store as reports POSTed over
// HTTPS, with Source email, the sender and the message's DKIM result.
// Messages without a valid report are answered 250 (so that senders do not
// retry them forever), logged and counted in Stats.
//
// Extract, ExtractReports and ExtractFile are the MIME and file extraction
// on their own, used by the admin API's import; Mbox splits an mbox file
// into messages; VerifyDKIM gives the DKIM result stored with a report.
//
//	srv, err := reportmail.New(reportmail.Options{
//		Hostname:  "relay.example.com",
//		Addresses: []string{"tlsrpt@reports.example.org"},
//		Store:     store, // *tlsrpt.Store
//		LookupTXT: lookupTXT,
//	})
//	go srv.Serve(ln)
//	defer srv.Shutdown(ctx)
//
// The package imports nothing of the relay: configuration, DNS resolver and
// the domains served are passed in.
package reportmail
