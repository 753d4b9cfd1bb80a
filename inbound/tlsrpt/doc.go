// Package tlsrpt receives SMTP TLS reports (RFC 8460): it decodes and
// strictly validates report bodies, stores them durably in bbolt with
// deduplication, and serves the HTTPS endpoint that senders POST them to.
//
// The pieces are independent so that other ways in (reports arriving by
// email, files imported by relayctl) reuse them:
//
//	data, err := tlsrpt.Decode(body, contentType, contentEncoding, maxCompressed, maxDecompressed)
//	report, err := tlsrpt.Parse(data)
//	id, duplicate, err := store.Add(ctx, report, data, tlsrpt.Meta{Source: tlsrpt.SourceEmail, ...})
//
// Handler does all three for an HTTP request. The daemon needs only
// OpenStore and Handler; the admin API reads the same Store:
//
//	store, err := tlsrpt.OpenStore(filepath.Join(dataDir, "reports.db"))
//	defer store.Close()
//	mux.Handle(path, tlsrpt.Handler(store, tlsrpt.HandlerOptions{
//		MaxBody: maxBody, Served: servesDomain, Logger: log,
//	}))
//	admin.Handler(q, log, admin.Options{Reports: store, ...})
//
// This package imports nothing of the relay: it knows no configuration,
// queue or delivery policy. Which domains the relay serves is passed in as
// a predicate (Meta.Served, HandlerOptions.Served).
package tlsrpt
