package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/netutil"
)

// Defaults of the Options fields left zero.
const (
	DefaultMaxConns          = 4096
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultCertCheckInterval = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Address is the host:port Listen binds, such as ":443".
	Address string
	// Certs are certificate files; the pair whose leaf is valid for the
	// client's SNI name is used, else the first pair. Certs, ACME or both
	// are required.
	Certs []CertPair
	// ACME obtains certificates for the policy hosts and ReportHosts with
	// ACME; nil disables it. With Certs as well, a file certificate valid
	// for the name is preferred.
	ACME *ACMEOptions
	// Policies are the MTA-STS policies served, one per domain.
	Policies []PolicyConfig
	// ReportPath is the URL path of the TLS-RPT endpoint, such as
	// "/report/tlsrpt"; empty disables it.
	ReportPath string
	// ReportHandler serves ReportPath on every configured host name (the
	// policy hosts and ReportHosts); nil answers 404 there.
	ReportHandler http.Handler
	// ReportHosts are more host names that get the report endpoint (and,
	// with ACME, certificates), such as the relay's own name.
	ReportHosts []string
	// Logger receives start-up, certificate and error messages; requests
	// are not logged. Nil discards.
	Logger *slog.Logger
	// MaxConns caps concurrent connections; 0 means DefaultMaxConns.
	// Further clients wait in the listen backlog.
	MaxConns int
	// MaxHeaderBytes caps request headers; 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Timeouts of the http.Server; zero values mean the Default* constants.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// CertCheckInterval is how often the certificate files are checked for
	// changes (on the next handshake after it passed); 0 means
	// DefaultCertCheckInterval.
	CertCheckInterval time.Duration
	// ObservePolicyRequest, if set, is called with the HTTP status of each
	// request for the MTA-STS policy path (200, 404, 405), whatever its
	// host (metrics count with it). It must be cheap.
	ObservePolicyRequest func(status int)
}

// ACMEOptions configure certificates from an ACME CA (RFC 8555) with the
// TLS-ALPN-01 challenge (RFC 8737) answered on the Server's own listener.
type ACMEOptions struct {
	// Directory is the CA's directory URL; empty means Let's Encrypt.
	Directory string
	// Email is the account contact address.
	Email string
	// CacheDir keeps the account key and certificates. Required.
	CacheDir string
	// Hosts are more names certificates may be requested for; the policy
	// hosts and ReportHosts are always allowed, no other name is.
	Hosts []string
	// RootCAs verifies the CA's HTTPS certificate; nil means the system
	// roots. Tests set it for their local CA.
	RootCAs *x509.CertPool
}

// Server is the inbound HTTPS server. Make it with New.
type Server struct {
	opts Options
	log  *slog.Logger
	acme *autocert.Manager // nil without ACME
	http *http.Server

	// The policies served and the certificate files can be replaced
	// while the server runs (Reconfigure); requests and handshakes load
	// the current ones.
	reconfigure sync.Mutex                // serializes Reconfigure
	handler     atomic.Pointer[handler]   // never nil
	certs       atomic.Pointer[certStore] // nil without Certs
}

// New validates opts, renders the policies and loads the certificates.
func New(opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	setDefault(&opts.MaxConns, DefaultMaxConns)
	setDefault(&opts.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&opts.ReadTimeout, DefaultReadTimeout)
	setDefault(&opts.WriteTimeout, DefaultWriteTimeout)
	setDefault(&opts.IdleTimeout, DefaultIdleTimeout)
	setDefault(&opts.CertCheckInterval, DefaultCertCheckInterval)
	if len(opts.Certs) == 0 && opts.ACME == nil {
		return nil, errors.New("inbound: no certificate: give certificate files or ACME options")
	}
	if opts.ReportPath != "" && opts.ReportPath[0] != '/' {
		return nil, fmt.Errorf("inbound: report path %q does not start with /", opts.ReportPath)
	}

	h, err := newHandler(opts, log)
	if err != nil {
		return nil, fmt.Errorf("inbound: %w", err)
	}
	s := &Server{opts: opts, log: log}
	s.handler.Store(h)
	if len(opts.Certs) > 0 {
		certs, err := newCertStore(opts.Certs, opts.CertCheckInterval, log)
		if err != nil {
			return nil, fmt.Errorf("inbound: %w", err)
		}
		s.certs.Store(certs)
	}
	nextProtos := []string{"h2", "http/1.1"}
	if opts.ACME != nil {
		if s.acme, err = newACMEManager(*opts.ACME, s.acmeHostAllowed, log); err != nil {
			return nil, fmt.Errorf("inbound: %w", err)
		}
		log.Info("ACME certificates enabled", "directory", orDefault(opts.ACME.Directory, acme.LetsEncryptURL),
			"cache_dir", opts.ACME.CacheDir, "hosts", append(h.hostNames(), opts.ACME.Hosts...))
		nextProtos = append(nextProtos, acme.ALPNProto)
	}
	s.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.handler.Load().ServeHTTP(w, r)
		}),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     nextProtos,
			GetCertificate: s.getCertificate,
		},
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 100},
		// TLS handshake failures and the like come from every scanner on
		// the internet: keep them out of the normal log.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// setDefault replaces a zero or negative value with def.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Listen binds Options.Address with TCP.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.opts.Address)
	if err != nil {
		return nil, fmt.Errorf("inbound: listen: %w", err)
	}
	return ln, nil
}

// Serve accepts connections on ln, a TCP listener, wraps them in TLS and
// serves HTTP/2 and HTTP/1.1 until Shutdown. It returns
// http.ErrServerClosed after Shutdown, and other errors as they happen.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("inbound HTTPS serving", "address", ln.Addr().String(),
		"policies", len(s.handler.Load().policies), "report_path", s.opts.ReportPath, "acme", s.acme != nil)
	return s.http.ServeTLS(netutil.LimitListener(ln, s.opts.MaxConns), "", "")
}

// Shutdown stops accepting connections and waits until requests in
// progress are done or ctx ends (see http.Server.Shutdown).
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("inbound: shutdown: %w", err)
	}
	return nil
}

// ReloadCertificates re-reads every certificate file now (the daemon calls
// it on SIGHUP). New handshakes use the new certificates; established
// connections are not touched. A pair that fails to load keeps its previous
// certificate, and the error says which.
func (s *Server) ReloadCertificates() error {
	certs := s.certs.Load()
	if certs == nil {
		return nil
	}
	if err := certs.reload(true); err != nil {
		return fmt.Errorf("inbound: reload certificates: %w", err)
	}
	return nil
}

// Reconfigure replaces the MTA-STS policies served and the certificate
// files, as a configuration reload does. Everything is checked and loaded
// first: when a policy is invalid or a certificate pair cannot be loaded,
// nothing changes and the error says why. Otherwise new requests get the
// new policies and new handshakes the new certificates (every file is read
// again, changed or not); connections already established are not
// touched.
//
// The listener address, the report endpoint, ACME and the other Options
// stay as they were given to New. With ACME, certificates may be requested
// for the new policy hosts from then on. Certificate files cannot be added
// to a server made without any, nor all be removed from one made with
// some, unless ACME is on.
func (s *Server) Reconfigure(policies []PolicyConfig, certs []CertPair) error {
	s.reconfigure.Lock()
	defer s.reconfigure.Unlock()
	opts := s.opts
	opts.Policies = policies
	opts.Certs = certs
	if len(certs) == 0 && s.acme == nil {
		return errors.New("inbound: reconfigure: no certificate: give certificate files (ACME is not enabled)")
	}
	h, err := newHandler(opts, s.log)
	if err != nil {
		return fmt.Errorf("inbound: reconfigure: %w", err)
	}
	var store *certStore
	if len(certs) > 0 {
		if store, err = newCertStore(certs, opts.CertCheckInterval, s.log); err != nil {
			return fmt.Errorf("inbound: reconfigure: %w", err)
		}
	}
	s.handler.Store(h)
	s.certs.Store(store)
	return nil
}

// PolicyIDs returns the id of every served policy by domain.
func (s *Server) PolicyIDs() map[string]string {
	h := s.handler.Load()
	ids := make(map[string]string, len(h.policies))
	for _, p := range h.policies {
		ids[p.domain] = p.id
	}
	return ids
}

// acmeHostAllowed reports whether ACME may request a certificate for a
// host: a policy host or report host of the current configuration.
func (s *Server) acmeHostAllowed(name string) bool {
	return s.handler.Load().knownHost(name)
}

// getCertificate chooses the certificate for a handshake: the ACME
// challenge certificate for TLS-ALPN-01 (RFC 8737 §3), a file certificate
// valid for the SNI name, an ACME certificate for an allowed name, and
// finally the first file certificate.
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.acme != nil && slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
		return s.acme.GetCertificate(hello)
	}
	name := normalizeDomain(hello.ServerName)
	var fallback *tls.Certificate
	if certs := s.certs.Load(); certs != nil {
		c, exact := certs.lookup(name)
		if exact {
			return c, nil
		}
		fallback = c
	}
	if s.acme != nil && s.handler.Load().knownHost(name) {
		return s.acme.GetCertificate(hello)
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, fmt.Errorf("inbound: no certificate for server name %q", hello.ServerName)
}

// newACMEManager returns an autocert manager restricted to o.Hosts and
// the hosts known reports as configured (asked at each request, so that a
// reconfiguration takes effect).
func newACMEManager(o ACMEOptions, known func(host string) bool, log *slog.Logger) (*autocert.Manager, error) {
	if o.CacheDir == "" {
		return nil, errors.New("ACME needs a cache directory")
	}
	extra := make(map[string]bool, len(o.Hosts))
	for _, h := range o.Hosts {
		extra[normalizeDomain(h)] = true
	}
	client := &acme.Client{DirectoryURL: o.Directory, UserAgent: "relay-inbound"}
	if o.RootCAs != nil {
		client.HTTPClient = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: 10 * time.Second,
			},
			Timeout: time.Minute,
		}
	}
	return &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(o.CacheDir),
		HostPolicy: func(_ context.Context, host string) error {
			if h := normalizeDomain(host); extra[h] || known(h) {
				return nil
			}
			return fmt.Errorf("inbound: ACME: host %q not configured", host)
		},
		Email:  o.Email,
		Client: client,
	}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// handler routes requests by host and path. It is immutable after
// newHandler; Reconfigure replaces it as a whole.
type handler struct {
	policies   map[string]*servedPolicy // by policy host, "mta-sts.example.org"
	hosts      map[string]bool          // every configured host name
	reportPath string
	report     http.Handler
	observe    func(status int) // nil: none

	// Header values shared by all policy responses; never modified.
	textPlain []string // RFC 8461 §3.2: media type text/plain
	noSniff   []string
}

// servedPolicy is a policy rendered for serving. The header values are
// shared by all responses (net/http only reads them), so serving a policy
// allocates nothing beyond what net/http does.
type servedPolicy struct {
	domain        string
	id            string
	body          []byte
	contentLength []string
}

var errDuplicatePolicy = errors.New("more than one policy")

func newHandler(opts Options, log *slog.Logger) (*handler, error) {
	h := &handler{
		policies:   make(map[string]*servedPolicy, len(opts.Policies)),
		hosts:      make(map[string]bool),
		reportPath: opts.ReportPath,
		report:     opts.ReportHandler,
		observe:    opts.ObservePolicyRequest,
		textPlain:  []string{"text/plain"},
		noSniff:    []string{"nosniff"},
	}
	for _, pc := range opts.Policies {
		body, err := RenderPolicy(pc)
		if err != nil {
			return nil, err
		}
		pc = normalizePolicy(pc)
		host := PolicyHost(pc.Domain)
		if _, dup := h.policies[host]; dup {
			return nil, fmt.Errorf("domain %s: %w", pc.Domain, errDuplicatePolicy)
		}
		p := &servedPolicy{
			domain:        pc.Domain,
			id:            PolicyID(body),
			body:          body,
			contentLength: []string{strconv.Itoa(len(body))},
		}
		h.policies[host] = p
		h.hosts[host] = true
		if pc.MaxAge < MinRecommendedMaxAge {
			// SRV05: short max_age leaves senders without a policy too often.
			log.Warn("MTA-STS max_age is less than a day; senders will refetch often and are unprotected once it expires",
				"domain", pc.Domain, "max_age", pc.MaxAge)
		}
		log.Info("MTA-STS policy", "host", host, "mode", pc.Mode, "max_age", pc.MaxAge, "id", p.id)
	}
	for _, rh := range opts.ReportHosts {
		name := normalizeDomain(rh)
		if err := checkDomainName(name, false); err != nil {
			return nil, fmt.Errorf("report host %q: %w", rh, err)
		}
		h.hosts[name] = true
	}
	return h, nil
}

// hostNames returns the configured host names, sorted.
func (h *handler) hostNames() []string {
	names := make([]string, 0, len(h.hosts))
	for n := range h.hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (h *handler) knownHost(name string) bool { return h.hosts[name] }

// allowedMethods is the Allow header of 405 answers for the policy.
const allowedMethods = "GET, HEAD"

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := hostKey(r.Host)
	// SRV02: the TLS server name, when the client sent one, must name the
	// same host as the request, so a policy is only given out for a
	// connection made to its mta-sts host.
	if r.TLS != nil && r.TLS.ServerName != "" && !equalHost(r.TLS.ServerName, host) {
		http.NotFound(w, r)
		return
	}
	switch path := r.URL.Path; {
	case path == PolicyPath:
		p := h.policies[host]
		if p == nil {
			h.observePolicy(http.StatusNotFound)
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.observePolicy(http.StatusMethodNotAllowed)
			w.Header().Set("Allow", allowedMethods)
			http.Error(w, "405 method not allowed: use GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.observePolicy(http.StatusOK)
		hdr := w.Header()
		hdr["Content-Type"] = h.textPlain
		hdr["Content-Length"] = p.contentLength
		hdr["X-Content-Type-Options"] = h.noSniff
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(p.body)
		}
	case h.reportPath != "" && path == h.reportPath && h.report != nil && h.hosts[host]:
		h.report.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// observePolicy reports the status of a policy request.
func (h *handler) observePolicy(status int) {
	if h.observe != nil {
		h.observe(status)
	}
}

// hostKey turns a Host header into a map key: port removed, one trailing
// dot removed, lower-case. It allocates only for upper-case input.
func hostKey(host string) string {
	if i := lastColon(host); i >= 0 {
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return normalizeDomain(host)
		}
	}
	return host
}

// lastColon returns the index of the colon before a port, or -1 (an IPv6
// literal without a port has colons only inside brackets).
func lastColon(host string) int {
	for i := len(host) - 1; i >= 0; i-- {
		switch host[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

// equalHost compares a TLS server name with a host key.
func equalHost(serverName, key string) bool {
	if n := len(serverName); n > 0 && serverName[n-1] == '.' {
		serverName = serverName[:n-1]
	}
	if len(serverName) != len(key) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := serverName[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != key[i] {
			return false
		}
	}
	return true
}
