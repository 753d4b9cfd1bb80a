package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/relay/tlsstats"
)

// startDaemon runs a daemon whose mail to dest.example and other.example
// stays queued (deferred): every attempt is refused at once.
func startDaemon(t *testing.T) (string, *config.Config, func() error) {
	t.Helper()
	addr := freeAddr(t)
	d := runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"   # nothing answers: no test query leaves the machine
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[delivery]
first_retry = "1h"
[[route]]
domain = "dest.example"
next_hop = "127.0.0.1:1"
[[route]]
domain = "other.example"
next_hop = "127.0.0.1:1"
`, addr), Options{SkipDNSSECCheck: true})
	return addr, d.cfg, d.stop
}

// startDeliveringDaemon runs a daemon that resolves through dnsAddr and
// delivers to MX hosts on mxPort, with extra appended to its relay.toml;
// it returns the daemon and the address of its SMTP listener.
func startDeliveringDaemon(t *testing.T, dnsAddr string, mxPort int, extra string) (string, *testDaemon) {
	t.Helper()
	addr := freeAddr(t)
	d := runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = %q
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
`, dnsAddr, addr)+extra, Options{SkipDNSSECCheck: true, MXPort: mxPort})
	return addr, d
}

func sendMail(t *testing.T, addr, from, to, body string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, body)
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := strings.Cut(resp.StatusText, "queued as ")
	return strings.TrimSpace(id)
}

// relayctl builds the admin CLI once per test.
func relayctl(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relayctl")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/relayctl").CombinedOutput()
	if err != nil {
		t.Fatalf("build relayctl: %v\n%s", err, out)
	}
	return func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
}

// TestRelayctlAgainstRunningDaemon drives the real relayctl binary against
// a running daemon: inspect, list, show, hold, release, delete.
func TestRelayctlAgainstRunningDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds relayctl")
	}
	addr, cfg, stop := startDaemon(t)
	ctl := relayctl(t)
	sock := "--socket=" + cfg.AdminSocketPath()
	id1 := sendMail(t, addr, "alice@example.org", "bob@dest.example", "Subject: one\r\n\r\nhello\r\n")
	id2 := sendMail(t, addr, "", "carol@other.example", "Subject: two\r\n\r\nbounce\r\n")

	steps := []struct {
		args []string
		want []string
	}{
		{[]string{"queue", "inspect"}, []string{"dest.example", "other.example"}},
		{[]string{"queue", "list"}, []string{id1, id2, "alice@example.org", "<>", "bob@dest.example"}},
		{[]string{"queue", "list", "--domain", "other.example"}, []string{id2}},
		{[]string{"queue", "show", id1}, []string{"alice@example.org", "bob@dest.example"}},
		{[]string{"queue", "hold", id1}, []string{id1}},
		{[]string{"queue", "show", id1}, []string{"held"}},
		{[]string{"queue", "release", id1}, []string{id1}},
		{[]string{"queue", "delete", id2}, []string{id2}},
	}
	for _, s := range steps {
		out, err := ctl(append([]string{sock}, s.args...)...)
		if err != nil {
			t.Fatalf("relayctl %v: %v\n%s", s.args, err, out)
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Errorf("relayctl %v: output lacks %q:\n%s", s.args, w, out)
			}
		}
	}
	out, err := ctl(sock, "--json", "queue", "list")
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		ID         string
		Recipients []struct{ State string }
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(list) != 1 || (list[0].Recipients[0].State != "queued" && list[0].Recipients[0].State != "deferred") {
		t.Fatalf("after release and delete: %s", out)
	}
	if out, _ := ctl(sock, "queue", "show", id2); !strings.Contains(out, "not found") {
		t.Errorf("show of a deleted message: %s", out)
	}

	// With the daemon stopped, relayctl says so clearly.
	if err := stop(); err != nil {
		t.Fatalf("daemon stop: %v", err)
	}
	if _, err := os.Stat(cfg.AdminSocketPath()); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind: %v", err)
	}
	out, err = ctl(sock, "queue", "list")
	if err == nil || !strings.Contains(out, "not running") {
		t.Errorf("relayctl with the daemon down: %v\n%s", err, out)
	}
}

// TestDaemonDeliversEndToEnd runs the whole daemon against the in-process
// DNS server and an SMTP receiver with STARTTLS: a message submitted over
// SMTP arrives byte for byte, behind one Received header, over TLS.
func TestDaemonDeliversEndToEnd(t *testing.T) {
	zone := testnet.NewZone(
		"dest.test. 300 IN MX 10 mx.dest.test.",
		"mx.dest.test. 300 IN A 127.0.0.21",
	)
	dnsSrv := testnet.StartDNS(t, zone)
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx.dest.test")
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.21:0", TLSCert: &cert})

	addr, d := startDeliveringDaemon(t, dnsSrv.Addr(), rcv.Port(), "")
	cfg := d.cfg

	body := "From: alice@example.org\r\nDKIM-Signature: v=1; a=rsa-sha256; b=xyz\r\nSubject: end to end\r\n\r\n.dot line\r\n8bit: \xc3\xa9\r\n"
	sendMail(t, addr, "alice@example.org", "bob@dest.test", body)
	got := rcv.WaitMessages(t, 1, 15*time.Second)[0]
	if !got.TLS {
		t.Error("delivered without STARTTLS although the receiver offered it")
	}
	if got.Helo != "relay.test" {
		t.Errorf("EHLO %q, want the configured hostname", got.Helo)
	}
	data := string(got.Data)
	if !strings.HasPrefix(data, "Received: ") || !strings.HasSuffix(data, body) || strings.Count(data, "Received:") != 1 {
		t.Fatalf("message changed on the way:\n%q", data)
	}

	// The TLS session is counted for TLS reporting under its policy
	// domain and type.
	ac := admin.NewClient(cfg.AdminSocketPath())
	defer ac.Close()
	var stats []tlsstats.Counts
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for len(stats) == 0 && time.Now().Before(deadline) {
		if stats, err = ac.TLSStats(context.Background(), "", "dest.test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(stats) != 1 || stats[0].PolicyType != "no-policy-found" || stats[0].Success != 1 || stats[0].Failure != 0 {
		t.Fatalf("TLS statistics %+v", stats)
	}
}

// TestPolicyLookupExplainsDANE asks a running daemon, through the admin
// API that `relayctl policy lookup` uses, what it would do for a domain
// with DNSSEC-signed MX and TLSA records, and probes the live host.
func TestPolicyLookupExplainsDANE(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx.dest.test")
	spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	zone := testnet.NewZone(
		"dest.test. 300 IN MX 10 mx.dest.test.",
		"dest.test. 300 IN MX 20 mx2.dest.test.",
		"mx.dest.test. 300 IN A 127.0.0.22",
		"mx2.dest.test. 300 IN A 127.0.0.23",
		"_25._tcp.mx.dest.test. 300 IN TLSA 3 1 1 "+hex.EncodeToString(spki[:]),
		"_25._tcp.mx.dest.test. 300 IN TLSA 1 1 1 "+hex.EncodeToString(spki[:]),
	)
	zone.Sign("dest.test.")
	dnsSrv := testnet.StartDNS(t, zone)
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.22:0", TLSCert: &cert})

	_, d := startDeliveringDaemon(t, dnsSrv.Addr(), rcv.Port(), "")
	cfg := d.cfg

	c := admin.NewClient(cfg.AdminSocketPath())
	defer c.Close()
	ex, err := c.PolicyLookup(context.Background(), "dest.test", true)
	if err != nil {
		t.Fatal(err)
	}
	if ex.MXSecurity != "secure" || len(ex.Hosts) != 2 {
		t.Fatalf("explanation %+v", ex)
	}
	h := ex.Hosts[0]
	if h.Host != "mx.dest.test" || h.Policy != "dane" || h.TLSABase != "mx.dest.test" || len(h.TLSA) != 2 {
		t.Fatalf("first host %+v", h)
	}
	usable := map[bool]int{}
	for _, r := range h.TLSA {
		usable[r.Usable]++
	}
	if usable[true] != 1 || usable[false] != 1 {
		t.Errorf("TLSA verdicts %+v, want the 3 1 1 usable and the 1 1 1 unusable", h.TLSA)
	}
	if h.Probe == nil || !strings.HasPrefix(h.Probe.Verification, "ok: DANE-EE 3 1 1") {
		t.Errorf("probe %+v", h.Probe)
	}
	if rcv.Messages() != nil && len(rcv.Messages()) != 0 {
		t.Error("the probe sent mail")
	}
	if h2 := ex.Hosts[1]; h2.Policy != "opportunistic" || !strings.Contains(h2.Reason, "no DNSSEC-signed TLSA") {
		t.Errorf("second host %+v", h2)
	}
}
