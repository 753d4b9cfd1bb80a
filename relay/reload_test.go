package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
)

// routeConfig is a daemon whose mail for dest.example goes to nextHop.
func routeConfig(smtpAddr, nextHop string, workers int) string {
	return fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[delivery]
workers = %d
[[route]]
domain = "dest.example"
next_hop = %q
`, smtpAddr, workers, nextHop)
}

// TestReloadRouteChangesNextHop: after a reload with a changed route, mail
// goes to the new next hop; a changed worker count is named as needing a
// restart.
func TestReloadRouteChangesNextHop(t *testing.T) {
	first := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.41:0"})
	second := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.42:0"})
	smtpAddr := freeAddr(t)
	d := runDaemon(t, routeConfig(smtpAddr, first.Addr(), 64), Options{SkipDNSSECCheck: true})

	sendMail(t, smtpAddr, "alice@example.org", "bob@dest.example", "Subject: one\r\n\r\none\r\n")
	first.WaitMessages(t, 1, 15*time.Second)

	d.rewrite(t, routeConfig(smtpAddr, second.Addr(), 8))
	res, err := d.admin.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Config != d.path || !reflect.DeepEqual(res.Changed, []string{"route"}) || !reflect.DeepEqual(res.RestartNeeded, []string{"delivery.workers"}) {
		t.Errorf("reload result %+v, want route changed and delivery.workers needing a restart", res)
	}
	if !strings.Contains(d.logs.String(), "needs a restart: delivery.workers") {
		t.Error("no log line naming the setting that needs a restart")
	}

	sendMail(t, smtpAddr, "alice@example.org", "carol@dest.example", "Subject: two\r\n\r\ntwo\r\n")
	got := second.WaitMessages(t, 1, 15*time.Second)
	if !strings.Contains(string(got[0].Data), "Subject: two") {
		t.Errorf("the second next hop got %q", got[0].Data)
	}
	if n := len(first.Messages()); n != 1 {
		t.Errorf("the first next hop got %d messages, want 1", n)
	}

	// The running configuration keeps the start-up worker count: a
	// second reload still names it.
	res, err = d.admin.Reload(context.Background())
	if err != nil || !reflect.DeepEqual(res.RestartNeeded, []string{"delivery.workers"}) || len(res.Changed) != 0 {
		t.Errorf("second reload %+v, %v", res, err)
	}
}

// TestReloadBrokenConfigKeepsOld: a reload with an invalid file is
// refused with every problem and its line, and the old configuration
// stays in force.
func TestReloadBrokenConfigKeepsOld(t *testing.T) {
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.43:0"})
	smtpAddr := freeAddr(t)
	metricsAddr := freeAddr(t)
	good := routeConfig(smtpAddr, rcv.Addr(), 64) + fmt.Sprintf("[metrics]\naddress = %q\n", metricsAddr)
	d := runDaemon(t, good, Options{SkipDNSSECCheck: true})

	broken := strings.Replace(good, `trusted_networks = ["127.0.0.0/8"]`, `trusted_networks = ["127.0.0.0/8"]
auth = "required"`, 1)
	broken = strings.Replace(broken, "[delivery]", "[delivery]\nworkerz = 3", 1)
	d.rewrite(t, broken)
	_, err := d.admin.Reload(context.Background())
	var apiErr *admin.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 422 {
		t.Fatalf("reload of a broken file: %v, want a 422 refusal", err)
	}
	for _, want := range []string{"not reloaded", "3 problem(s)", "relay.toml:9: listener[0].auth", "relay.toml:11: delivery.workerz is not a known key"} {
		if !strings.Contains(apiErr.Message, want) {
			t.Errorf("refusal %q lacks %q", apiErr.Message, want)
		}
	}
	logs := d.logs.String()
	for _, want := range []string{"reload: configuration problem", "relay.toml:9:", "configuration not reloaded; the running configuration stays in force"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if v, _ := metricSum(scrape(t, metricsAddr), "relay_config_last_reload_successful"); v != 0 {
		t.Errorf("relay_config_last_reload_successful = %v after a refused reload", v)
	}

	// The old configuration is in force: mail from a trusted network is
	// still accepted without AUTH and still routed.
	sendMail(t, smtpAddr, "alice@example.org", "bob@dest.example", "Subject: still\r\n\r\nworks\r\n")
	rcv.WaitMessages(t, 1, 15*time.Second)

	// Fixed, it reloads.
	d.rewrite(t, good)
	if _, err := d.admin.Reload(context.Background()); err != nil {
		t.Fatalf("reload of the fixed file: %v", err)
	}
	if v, _ := metricSum(scrape(t, metricsAddr), `relay_config_reloads_total{result="success"}`); v != 1 {
		t.Errorf("successful reloads = %v, want 1", v)
	}
}

// TestReloadAddsUser: a user added to the file can log in after a
// reload; one removed cannot. The intake certificate is re-read.
func TestReloadAddsUser(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "intake.pem"), filepath.Join(dir, "intake.key")
	firstCert := ca.Issue("relay.test")
	writeCertPair(t, certFile, keyFile, firstCert)
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	smtpAddr := freeAddr(t)
	conf := func(users ...[2]string) string {
		s := fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
tls = "starttls"
auth = "required"
[tls]
cert_file = %q
key_file = %q
`, smtpAddr, certFile, keyFile)
		for _, u := range users {
			s += fmt.Sprintf("[[user]]\nname = %q\npassword_hash = %q\n", u[0], u[1])
		}
		return s
	}
	alice := [2]string{"alice", hash("alice-pw")}
	bob := [2]string{"bob", hash("bob-pw")}
	d := runDaemon(t, conf(alice), Options{SkipDNSSECCheck: true})

	// login authenticates over STARTTLS and returns the serial number of
	// the intake's certificate.
	login := func(user, pw string) (string, error) {
		c, err := smtp.DialStartTLS(smtpAddr, &tls.Config{ServerName: "relay.test", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		authErr := c.Auth(sasl.NewPlainClient("", user, pw))
		state, ok := c.TLSConnectionState()
		if !ok || len(state.PeerCertificates) == 0 {
			t.Fatal("no TLS session")
		}
		return state.PeerCertificates[0].SerialNumber.String(), authErr
	}
	if _, err := login("alice", "alice-pw"); err != nil {
		t.Fatalf("alice before the reload: %v", err)
	}
	if _, err := login("bob", "bob-pw"); err == nil {
		t.Fatal("bob logged in before he was configured")
	}

	secondCert := ca.Issue("relay.test")
	writeCertPair(t, certFile, keyFile, secondCert)
	d.rewrite(t, conf(bob))
	res, err := d.admin.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Changed, "user") || len(res.RestartNeeded) != 0 {
		t.Errorf("reload result %+v", res)
	}
	serial, err := login("bob", "bob-pw")
	if err != nil {
		t.Errorf("bob after the reload: %v", err)
	}
	if serial != secondCert.Leaf.SerialNumber.String() {
		t.Errorf("the intake still presents the old certificate after the reload")
	}
	if _, err := login("alice", "alice-pw"); err == nil {
		t.Error("alice, removed from the file, still logs in")
	}

	// A user with a broken hash refuses the whole reload: bob stays.
	d.rewrite(t, conf(bob, [2]string{"carol", "$2a$10$short"}))
	if _, err := d.admin.Reload(context.Background()); err == nil {
		t.Error("a reload with a broken password hash was accepted")
	}
	if _, err := login("bob", "bob-pw"); err != nil {
		t.Errorf("bob after a refused reload: %v", err)
	}
}

// TestReloadLogLevelOnSIGHUP: SIGHUP reloads the file, and a new [log]
// level takes effect.
func TestReloadLogLevelOnSIGHUP(t *testing.T) {
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)
	smtpAddr := freeAddr(t)
	conf := func(lvl string) string {
		return fmt.Sprintf(`
data_dir = "DATA_DIR"
[log]
level = %q
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
`, lvl, smtpAddr)
	}
	d := runDaemon(t, conf("info"), Options{SkipDNSSECCheck: true, LogLevel: level})
	d.rewrite(t, conf("debug"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the debug level", func() bool { return level.Level() == slog.LevelDebug })
	waitFor(t, "the reload log line", func() bool { return strings.Contains(d.logs.String(), "changed=log.level") })
	if strings.Contains(d.logs.String(), "level=DEBUG") {
		t.Error("debug lines were logged before the reload")
	}
	d.log.Debug("probe after the reload")
	if !strings.Contains(d.logs.String(), "level=DEBUG msg=\"probe after the reload\"") {
		t.Error("the daemon's logger does not log at the reloaded level")
	}
}

// TestReloadWithoutConfigFile: a daemon on the embedded default has no
// file to read again, and says so.
func TestReloadWithoutConfigFile(t *testing.T) {
	cfg, err := config.Parse(fmt.Appendf(nil, `
data_dir = %q
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
`, t.TempDir(), freeAddr(t)), "embedded")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{SkipDNSSECCheck: true, Ready: func() { close(ready) }}) // no ConfigPath
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon exited: %v", err)
	}
	c := admin.NewClient(cfg.AdminSocketPath())
	defer c.Close()
	_, err = c.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "without a configuration file") {
		t.Errorf("reload without a file: %v", err)
	}
}

// TestDiffConfig names changed keys by their path in the file.
func TestDiffConfig(t *testing.T) {
	parse := func(text string) *config.Config {
		t.Helper()
		cfg, err := config.Parse([]byte(text), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := `
hostname = "relay.example.com"
data_dir = "/var/lib/relay"
[dns]
resolver = "127.0.0.1:53"
[[listener]]
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.0/8"]
[delivery]
first_retry = "5m"
`
	a := parse(base)
	b := parse(strings.NewReplacer(`"127.0.0.1:2525"`, `"127.0.0.1:2526"`, `"5m"`, `"10m"`, `"/var/lib/relay"`, `"/srv/relay"`).Replace(base) +
		"[[listener]]\naddress = \"127.0.0.1:587\"\ntrusted_networks = [\"127.0.0.0/8\"]\n[[route]]\ndomain = \"x.example\"\nnext_hop = \"192.0.2.1\"\n")
	var got []string
	diffConfig("", reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), func(k string) { got = append(got, k) })
	want := []string{"data_dir", "listener", "delivery.first_retry", "route"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff %v, want %v", got, want)
	}
	c := parse(strings.Replace(base, `"127.0.0.1:2525"`, `"127.0.0.1:2526"`, 1))
	got = nil
	diffConfig("", reflect.ValueOf(a).Elem(), reflect.ValueOf(c).Elem(), func(k string) { got = append(got, k) })
	if !reflect.DeepEqual(got, []string{"listener[0].address"}) {
		t.Errorf("diff %v, want listener[0].address", got)
	}
}
