package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Failure kinds of a FetchError: the RFC 8460 §4.3.1 result types a TLS-RPT
// report records for a policy that could not be obtained.
const (
	// KindFetchError: the policy could not be fetched (network, HTTP
	// status, redirect, media type, size, timeout).
	KindFetchError = "sts-policy-fetch-error"
	// KindPolicyInvalid: the policy was fetched but does not parse.
	KindPolicyInvalid = "sts-policy-invalid"
	// KindWebPKIInvalid: the certificate of mta-sts.<domain> is not valid
	// (untrusted, expired, or for another name).
	KindWebPKIInvalid = "sts-webpki-invalid"
)

// Defaults of FetcherOptions.
const (
	DefaultFetchTimeout = 20 * time.Second
	DefaultMaxBody      = 64 << 10 // checklist STS04
)

// wellKnownPath is where the policy is published (RFC 8461 §3.2).
const wellKnownPath = "/.well-known/mta-sts.txt"

// FetchError is a failed policy fetch. Kind is one of KindFetchError,
// KindPolicyInvalid and KindWebPKIInvalid, so that delivery can record the
// RFC 8460 result type.
type FetchError struct {
	Domain string // the policy domain
	Kind   string
	Err    error
}

// Error describes the failure with the domain and the kind.
func (e *FetchError) Error() string {
	return fmt.Sprintf("fetch MTA-STS policy for %s: %s: %v", e.Domain, e.Kind, e.Err)
}

// Unwrap returns the cause.
func (e *FetchError) Unwrap() error { return e.Err }

// FetcherOptions configures a Fetcher.
type FetcherOptions struct {
	// RootCAs verifies the policy server's certificate; nil means the
	// system pool (which honours SSL_CERT_FILE and SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// Timeout bounds one fetch from dialing to the end of the body; 0
	// means DefaultFetchTimeout.
	Timeout time.Duration
	// DialContext, when not nil, replaces the dialer (tests point
	// mta-sts.<domain>:443 at a loopback server with it).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxBody is the largest policy accepted, in bytes; 0 means
	// DefaultMaxBody. A larger body is an error, never truncated.
	MaxBody int64
	// UserAgent is sent with the request; empty means "relay-mta-sts".
	UserAgent string
}

// Fetcher fetches MTA-STS policies over HTTPS (checklist STS02–STS04,
// STS17). It is safe for concurrent use.
type Fetcher struct {
	client    *http.Client
	timeout   time.Duration
	maxBody   int64
	userAgent string
	flight    flight[*Policy]
}

// NewFetcher returns a Fetcher for opts.
func NewFetcher(opts FetcherOptions) *Fetcher {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	maxBody := opts.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "relay-mta-sts"
	}
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: timeout}).DialContext
	}
	tr := &http.Transport{
		Proxy:       nil, // never a proxy from the environment
		DialContext: dial,
		TLSClientConfig: &tls.Config{
			RootCAs:    opts.RootCAs,
			MinVersion: tls.VersionTLS12,
			// ServerName is set by the transport from the URL host,
			// mta-sts.<domain>, and the chain is verified for it (STS02).
		},
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		DisableKeepAlives:      true, // one request per host, rarely
		MaxResponseHeaderBytes: 64 << 10,
	}
	client := &http.Client{
		Transport: tr,
		// RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
	return &Fetcher{client: client, timeout: timeout, maxBody: maxBody, userAgent: ua}
}

// Fetch fetches and parses https://mta-sts.<domain>/.well-known/mta-sts.txt.
// Concurrent fetches for one domain share one request (STS17); the shared
// request is bounded by the Fetcher's timeout and is not cancelled when one
// caller's ctx ends, but that caller returns at once.
//
// Every error is a *FetchError, except an invalid domain name and the
// caller's own context ending while waiting.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, fmt.Errorf("fetch MTA-STS policy: %w", err)
	}
	shared := context.WithoutCancel(ctx)
	return f.flight.do(ctx, d, func() (*Policy, error) {
		ctx, cancel := context.WithTimeout(shared, f.timeout)
		defer cancel()
		return f.fetch(ctx, d)
	})
}

// fetch performs one request for the normalized domain d.
func (f *Fetcher) fetch(ctx context.Context, d string) (*Policy, error) {
	fail := func(kind string, err error) (*Policy, error) {
		return nil, &FetchError{Domain: d, Kind: kind, Err: err}
	}
	u := url.URL{Scheme: "https", Host: "mta-sts." + d, Path: wellKnownPath}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(KindFetchError, err)
	}
	req.Header.Set("User-Agent", f.userAgent)
	req.Header.Set("Accept", "text/plain")
	resp, err := f.client.Do(req)
	if err != nil {
		if isCertError(err) {
			return fail(KindWebPKIInvalid, err)
		}
		return fail(KindFetchError, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(KindFetchError, fmt.Errorf("%s: HTTP %s to %q: redirects are not followed (RFC 8461 §3.3)",
			u.String(), resp.Status, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		// RFC 8461 §3.3: only 200 is a policy.
		return fail(KindFetchError, fmt.Errorf("%s: HTTP %s", u.String(), resp.Status))
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), "text/plain") {
		// RFC 8461 §3.3: senders SHOULD check the media type is text/plain.
		return fail(KindFetchError, fmt.Errorf("%s: media type %q is not text/plain", u.String(), ct))
	}
	if resp.ContentLength > f.maxBody {
		return fail(KindFetchError, fmt.Errorf("%s: body of %d bytes is larger than %d", u.String(), resp.ContentLength, f.maxBody))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBody+1))
	if err == nil {
		// A body cut short by the timeout can look complete (the
		// server may end the stream when the request is abandoned): a
		// fetch that ran out of time has no policy.
		err = ctx.Err()
	}
	if err != nil {
		return fail(KindFetchError, fmt.Errorf("%s: read body: %w", u.String(), err))
	}
	if int64(len(body)) > f.maxBody {
		return fail(KindFetchError, fmt.Errorf("%s: body larger than %d bytes", u.String(), f.maxBody))
	}
	p, err := Parse(body)
	if err != nil {
		return fail(KindPolicyInvalid, fmt.Errorf("%s: %w", u.String(), err))
	}
	return p, nil
}

// isCertError reports whether err comes from certificate verification.
func isCertError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		sr  x509.SystemRootsError
	)
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &sr)
}
