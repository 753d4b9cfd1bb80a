package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/intake"
	"github.com/relaysec/relay/relay/metrics"
)

// ErrNoConfigFile is returned by a reload of a daemon that was not given
// a configuration file (the embedded default): there is no file to read
// again. The certificate files of the running configuration are re-read
// all the same.
var ErrNoConfigFile = errors.New("the relay runs without a configuration file (embedded default, no --config): there is nothing to reload; " +
	"write one with `relay config default > relay.toml` and restart with `relay serve --config relay.toml`")

// reloadable are the configuration keys a reload applies while the daemon
// runs. A change of any other key is logged as needing a restart.
var reloadable = map[string]bool{
	"tls.cert_file":     true, // intake certificate
	"tls.key_file":      true,
	"user":              true, // SMTP AUTH accounts
	"route":             true,
	"log.level":         true, // only with Options.LogLevel
	"delivery.hold":     true,
	"inbound.mta_sts":   true, // policies served
	"inbound.cert_file": true, // inbound certificates
	"inbound.key_file":  true,
	"inbound.cert":      true,
}

// reloader applies the configuration file, read again, to the running
// daemon: the parts in reloadable are swapped in place, and the others are
// named as needing a restart. It is safe for concurrent use; reloads run
// one at a time.
type reloader struct {
	path    string // "" with the embedded default
	log     *slog.Logger
	level   *slog.LevelVar   // nil: the log level cannot change
	metrics *metrics.Metrics // nil: not counted

	intakeCert *certHolder // nil when no listener uses TLS
	intakes    []*intake.Server
	engine     *deliver.Engine
	inbound    *inbound.Server // nil without [inbound]
	served     *servedSet      // nil without [inbound]
	// notify tells the service manager (sd_notify) about the reload.
	notify func(state string)

	mu sync.Mutex
	// running is the configuration in force: the start-up configuration
	// with the reloaded keys of later reloads applied. Keys that need a
	// restart keep their start-up values, so a reload names them until
	// the daemon restarts.
	running *config.Config
}

// Reload reads the configuration file again and applies it. An invalid
// file, or one whose certificates or passwords cannot be loaded, changes
// nothing: the error says why (a *config.Errors lists every problem with
// its line), and the running configuration stays in force.
func (r *reloader) Reload(ctx context.Context) (*admin.ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.reload()
	if r.metrics != nil && r.path != "" {
		r.metrics.ObserveReload(err == nil)
	}
	if errors.Is(err, ErrNoConfigFile) {
		r.log.Warn("configuration not reloaded: " + err.Error())
		return nil, err
	}
	if err != nil {
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			for _, e := range cerrs.List {
				r.log.Error("reload: configuration problem", "problem", e.Error())
			}
		}
		r.log.Error("configuration not reloaded; the running configuration stays in force", "file", r.path, "err", summary(err))
		r.notify("STATUS=Configuration reload refused: " + firstLine(summary(err)))
		return nil, err
	}
	r.notify("STATUS=Configuration reloaded from " + r.path)
	return res, nil
}

// reload does the work of Reload with r.mu held.
func (r *reloader) reload() (*admin.ReloadResult, error) {
	if r.path == "" {
		r.rereadCertificates()
		return nil, ErrNoConfigFile
	}
	next, err := config.Load(r.path)
	if err != nil {
		return nil, err
	}
	old := r.running
	res := &admin.ReloadResult{Config: r.path, Changed: []string{}, RestartNeeded: []string{}, Warnings: next.Warnings}
	for _, w := range next.Warnings {
		r.log.Warn("configuration: " + w)
	}
	diffConfig("", reflect.ValueOf(old).Elem(), reflect.ValueOf(next).Elem(), func(key string) {
		if reloadable[key] && (key != "log.level" || r.level != nil) {
			res.Changed = append(res.Changed, key)
		} else {
			res.RestartNeeded = append(res.RestartNeeded, key)
		}
	})
	// inbound.* keys are reloadable only for a server that runs; one that
	// is started or stopped needs a restart, which diffConfig reports as
	// "inbound".
	haveInbound := r.inbound != nil && next.Inbound != nil

	// Load everything that can fail before changing anything.
	users, err := loadUsers(next)
	if err != nil {
		return nil, err
	}
	var cert *certFile
	if r.intakeCert != nil {
		if cert, err = loadCertFile(next); err != nil {
			return nil, err
		}
	}
	if haveInbound {
		in := inboundOptions(next, r.log, nil)
		// Reconfigure loads and checks everything before it swaps: on
		// error nothing has changed.
		if err := r.inbound.Reconfigure(in.Policies, in.Certs); err != nil {
			return nil, err
		}
	}

	// Apply.
	if cert != nil {
		r.intakeCert.set(cert)
	}
	for _, s := range r.intakes {
		s.SetUsers(users)
		s.SetHold(next.Delivery.Hold)
	}
	r.engine.SetRoutes(deliveryRoutes(next))
	r.engine.SetHoldDSNs(next.Delivery.Hold)
	if haveInbound {
		r.served.set(servedDomains(next))
	}
	if r.level != nil {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(next.Log.Level)); err == nil {
			r.level.Set(lvl)
		}
	}

	// What is in force now: the old configuration with the reloaded keys.
	running := *old
	running.TLS, running.Users, running.Routes, running.Delivery.Hold = next.TLS, next.Users, next.Routes, next.Delivery.Hold
	if r.level != nil {
		running.Log.Level = next.Log.Level
	}
	if haveInbound {
		in := *old.Inbound
		in.MTASTS, in.CertFile, in.KeyFile, in.Certs = next.Inbound.MTASTS, next.Inbound.CertFile, next.Inbound.KeyFile, next.Inbound.Certs
		running.Inbound = &in
	}
	r.running = &running

	attrs := []any{"file", r.path, "changed", joinOrNone(res.Changed)}
	if cert != nil || haveInbound {
		attrs = append(attrs, "certificates", "re-read from their files")
	}
	r.log.Info("configuration reloaded", attrs...)
	if len(res.RestartNeeded) > 0 {
		r.log.Warn("needs a restart: "+strings.Join(res.RestartNeeded, ", "), "file", r.path,
			"detail", "these settings changed in the file but keep their old values until the relay restarts")
	}
	return res, nil
}

// rereadCertificates loads the certificate files of the running
// configuration again; a pair that fails keeps its previous certificate.
func (r *reloader) rereadCertificates() {
	if r.intakeCert != nil {
		if c, err := loadCertFile(r.running); err != nil {
			r.log.Error("intake certificate not re-read; the previous one stays in use", "err", err)
		} else {
			r.intakeCert.set(c)
			r.log.Info("intake certificate re-read", "cert_file", r.running.TLS.CertFile)
		}
	}
	if r.inbound != nil {
		if err := r.inbound.ReloadCertificates(); err != nil {
			r.log.Error("inbound certificates not all re-read; the previous ones stay in use", "err", err)
		} else {
			r.log.Info("inbound certificates re-read")
		}
	}
}

// watchSIGHUP reloads on every SIGHUP until the returned stop function is
// called. It replaces the default action of SIGHUP (exit).
func (r *reloader) watchSIGHUP() (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-hup:
				r.log.Info("SIGHUP: reloading the configuration", "file", r.path)
				// Reload logs what it did and what went wrong.
				_, _ = r.Reload(context.Background())
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(quit)
		<-done
	}
}

// diffConfig calls changed with the key path of every setting that
// differs between a and b, two values of one configuration type, walking
// the toml-tagged fields. A list of tables that changed length is one
// change ("listener"); otherwise its tables are compared one by one
// ("listener[1].address"). A reloadable key is reported as a whole
// ("user", "route").
func diffConfig(prefix string, a, b reflect.Value, changed func(key string)) {
	switch {
	case reloadable[prefix]:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			changed(prefix)
		}
	case a.Kind() == reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil() || b.IsNil():
			changed(prefix)
		default:
			diffConfig(prefix, a.Elem(), b.Elem(), changed)
		}
	case a.Kind() == reflect.Struct && hasTOMLFields(a.Type()):
		t := a.Type()
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			diffConfig(key, a.Field(i), b.Field(i), changed)
		}
	case a.Kind() == reflect.Slice && a.Type().Elem().Kind() == reflect.Struct && hasTOMLFields(a.Type().Elem()):
		if a.Len() != b.Len() {
			changed(prefix)
			return
		}
		for i := range a.Len() {
			diffConfig(fmt.Sprintf("%s[%d]", prefix, i), a.Index(i), b.Index(i), changed)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			changed(prefix)
		}
	}
}

// hasTOMLFields reports whether a struct type is a configuration table
// (as opposed to a value type such as config.Duration).
func hasTOMLFields(t reflect.Type) bool {
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			return true
		}
	}
	return false
}

// certHolder is the intake certificate, replaceable by a reload. Its get
// method is the GetCertificate of every intake listener's tls.Config.
type certHolder struct {
	cur atomic.Pointer[certFile]
}

func (h *certHolder) set(c *certFile) { h.cur.Store(c) }

func (h *certHolder) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.cur.Load().get(hello)
}

// loadCertFile loads [tls] cert_file and key_file, so that an unreadable
// pair is an error now rather than at the next handshake.
func loadCertFile(cfg *config.Config) (*certFile, error) {
	c := &certFile{cert: cfg.TLS.CertFile, key: cfg.TLS.KeyFile}
	if _, err := c.get(nil); err != nil {
		return nil, err
	}
	return c, nil
}

// servedSet answers whether the relay serves MTA-STS for a policy domain
// (tlsrpt.HandlerOptions.Served), replaceable by a reload.
type servedSet struct {
	fn atomic.Pointer[func(string) bool]
}

func newServedSet(fn func(string) bool) *servedSet {
	s := &servedSet{}
	s.set(fn)
	return s
}

func (s *servedSet) set(fn func(string) bool) { s.fn.Store(&fn) }

func (s *servedSet) contains(domain string) bool { return (*s.fn.Load())(domain) }

// deliveryRoutes maps [[route]] to the delivery engine's routes.
func deliveryRoutes(cfg *config.Config) []deliver.Route {
	routes := make([]deliver.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = deliver.Route{Domain: r.Domain, NextHop: r.NextHop, Security: r.Security}
	}
	return routes
}

// summary is a one-paragraph form of a reload error: the number of
// problems of a configuration file and the first of them.
func summary(err error) string {
	var cerrs *config.Errors
	if errors.As(err, &cerrs) && len(cerrs.List) > 0 {
		return fmt.Sprintf("%d problem(s) in the file, the first: %v", len(cerrs.List), cerrs.List[0])
	}
	return err.Error()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func joinOrNone(keys []string) string {
	if len(keys) == 0 {
		return "nothing"
	}
	return strings.Join(keys, ", ")
}

// servedFunc is s.contains, or nil when there is no set (no [inbound]).
func servedFunc(s *servedSet) func(string) bool {
	if s == nil {
		return nil
	}
	return s.contains
}
