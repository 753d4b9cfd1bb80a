package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/relay/config"
	"github.com/relaysec/relay/secpolicy"
)

func newDNSCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Print and check the DNS records for MTA-STS and TLS-RPT",
		Long: `The dns commands work from relay.toml (found like the other commands: --config,
./relay.toml, /etc/relay/relay.toml) and do not need the daemon.`,
	}
	cmd.AddCommand(newDNSRecordsCmd(a), newDNSCheckCmd(a))
	return cmd
}

func newDNSRecordsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "records DOMAIN",
		Short: "Print the DNS records to publish for a domain's MTA-STS policy",
		Long: `Print what to publish in DOMAIN's zone for the [[inbound.mta_sts]] policy of
DOMAIN in relay.toml: the _mta-sts TXT record with the policy id (it changes
whenever the policy does), where mta-sts.DOMAIN must point, the _smtp._tls
TXT record that sends TLS reports to this relay, and a TLSA record for the
certificate of [tls] when it is set. With [inbound.report_smtp], the
_smtp._tls record names the report mailbox (rua=mailto:) too, and an MX
record sends the mailbox's domain to this relay.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			return a.dnsRecords(cfg, args[0])
		},
	}
}

// dnsRecordsOutput is the JSON form of `dns records`.
type dnsRecordsOutput struct {
	Domain    string `json:"domain"`
	PolicyID  string `json:"policy_id"`
	Policy    string `json:"policy"`
	ReportURL string `json:"report_url"`
	// ReportMailto is the mailto: URI of the report mailbox
	// ([inbound.report_smtp]), empty without one.
	ReportMailto string      `json:"report_mailto,omitempty"`
	Records      []dnsRecord `json:"records"`
}

type dnsRecord struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
	Note  string `json:"note"`
}

func (a *app) dnsRecords(cfg *config.Config, domain string) error {
	pol, err := configuredPolicy(cfg, domain)
	if err != nil {
		return err
	}
	body, err := inbound.RenderPolicy(pol)
	if err != nil {
		return fmt.Errorf("[[inbound.mta_sts]] %s: %w", pol.Domain, err)
	}
	cert, err := intakeCertificate(cfg)
	if err != nil {
		fmt.Fprintf(a.stderr, "warning: no TLSA record: %v\n", err)
	}
	url := reportURL(cfg, pol.Domain)
	mailto, mx := reportMailbox(cfg)
	rua := url
	if mailto != "" {
		rua = mailto + "," + url
	}
	recs := inbound.DNSRecords(pol.Domain, pol, rua, cert)
	out := dnsRecordsOutput{Domain: pol.Domain, PolicyID: inbound.PolicyID(body), Policy: string(body), ReportURL: url, ReportMailto: mailto}
	for _, r := range recs {
		if r.Type == "CNAME" && r.Value == "" {
			r.Value = strings.TrimSuffix(cfg.Hostname, ".") + "."
			r.Note += " (the CNAME shown uses hostname from relay.toml)"
		}
		if r.Type == "TXT" && strings.HasPrefix(r.Name, "_smtp._tls.") && mailto != "" {
			r.Note = "asks senders to send their daily TLS reports to this relay, by mail to the report mailbox and by HTTPS POST " +
				"(a report that arrives both ways is stored once); keep only one of the two URIs if you prefer, " +
				"most senders support mailto:"
		}
		out.Records = append(out.Records, dnsRecord{r.Name, r.Type, r.Value, r.Note})
	}
	if mx != nil {
		if strings.EqualFold(mx.domain, pol.Domain) {
			fmt.Fprintf(a.stderr, "warning: the report mailbox %s is in %s itself, whose MX hosts receive its mail: "+
				"have them forward %s to this relay's report listener, or use an address in a subdomain such as tlsrpt@reports.%s\n",
				mx.address, pol.Domain, mx.address, pol.Domain)
		} else {
			note := "the report mailbox " + mx.address + ": mail for " + mx.domain + " must reach this relay's [inbound.report_smtp] listener, which senders connect to on port 25"
			if mx.port != "25" {
				note += " (it listens on " + mx.listen + ": forward port 25 to it)"
			}
			note += " (the MX shown uses hostname from relay.toml)"
			if !strings.HasSuffix(mx.domain, "."+pol.Domain) {
				note += "; it belongs in the zone of " + mx.domain
			}
			out.Records = append(out.Records, dnsRecord{mx.domain + ".", "MX", "10 " + strings.TrimSuffix(cfg.Hostname, ".") + ".", note})
		}
	}
	if a.jsonOut {
		return a.printJSON(out)
	}

	fmt.Fprintf(a.stdout, "MTA-STS policy of %s (https://%s%s):\n", pol.Domain, inbound.PolicyHost(pol.Domain), inbound.PolicyPath)
	for line := range strings.SplitSeq(strings.TrimRight(out.Policy, "\r\n"), "\n") {
		fmt.Fprintf(a.stdout, "  %s\n", strings.TrimSuffix(line, "\r"))
	}
	fmt.Fprintf(a.stdout, "Policy id:  %s\nReport URL: %s\n", out.PolicyID, out.ReportURL)
	if mailto != "" {
		fmt.Fprintf(a.stdout, "Report mailbox: %s\n", mailto)
	}
	fmt.Fprintf(a.stdout, "\nPublish in the zone of %s:\n\n", pol.Domain)
	tw := a.table()
	fmt.Fprintln(tw, "NAME\tTTL\tTYPE\tVALUE")
	for _, r := range out.Records {
		fmt.Fprintf(tw, "%s\t3600\t%s\t%s\n", r.Name, r.Type, r.Value)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	fmt.Fprintln(a.stdout, "\nNotes:")
	for _, r := range out.Records {
		fmt.Fprintf(a.stdout, "  %s %s: %s\n", r.Name, r.Type, r.Note)
	}
	fmt.Fprintf(a.stdout, "\nThen run: relayctl dns check %s\n", pol.Domain)
	return nil
}

// configuredPolicy returns the [[inbound.mta_sts]] policy of domain.
func configuredPolicy(cfg *config.Config, domain string) (inbound.PolicyConfig, error) {
	want := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
	if cfg.Inbound != nil {
		for _, p := range cfg.Inbound.MTASTS {
			if strings.EqualFold(strings.TrimSuffix(p.Domain, "."), want) {
				return inbound.PolicyConfig{Domain: want, Mode: p.Mode, MaxAge: p.MaxAge, MX: p.MX}, nil
			}
		}
	}
	return inbound.PolicyConfig{}, fmt.Errorf("%s has no [[inbound.mta_sts]] policy in the configuration: add one with domain = %q, mode, max_age and mx", want, want)
}

// reportURL is the rua URI of this relay for domain: the policy host (the
// only host name [inbound] is sure to have a certificate for) and the
// TLS-RPT path.
func reportURL(cfg *config.Config, domain string) string {
	path := "/report/tlsrpt"
	if cfg.Inbound != nil && cfg.Inbound.TLSRPT.Path != "" {
		path = cfg.Inbound.TLSRPT.Path
	}
	return "https://" + inbound.PolicyHost(domain) + path
}

// reportMX is the report mailbox of [inbound.report_smtp]: its first
// address, that address's domain, and the listener.
type reportMX struct {
	address, domain string
	listen, port    string
}

// reportMailbox returns the mailto: URI of the first report address of
// [inbound.report_smtp] and where its mail must go; "" and nil without the
// table.
func reportMailbox(cfg *config.Config) (string, *reportMX) {
	if cfg.Inbound == nil || cfg.Inbound.ReportSMTP == nil || len(cfg.Inbound.ReportSMTP.Addresses) == 0 {
		return "", nil
	}
	rs := cfg.Inbound.ReportSMTP
	addr := strings.TrimSpace(rs.Addresses[0])
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", nil // config validation refuses this
	}
	_, port, _ := net.SplitHostPort(rs.Address)
	// RFC 8460 §3: commas and semicolons delimit the rua list.
	mailto := "mailto:" + strings.NewReplacer(",", "%2C", ";", "%3B", " ", "%20").Replace(addr)
	return mailto, &reportMX{address: addr, domain: strings.ToLower(strings.TrimSuffix(addr[at+1:], ".")), listen: rs.Address, port: port}
}

// intakeCertificate returns the leaf of [tls] cert_file, nil when unset.
func intakeCertificate(cfg *config.Config) (*x509.Certificate, error) {
	if cfg.TLS.CertFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.TLS.CertFile)
	if err != nil {
		return nil, fmt.Errorf("[tls] cert_file: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("[tls] cert_file %s has no PEM certificate", cfg.TLS.CertFile)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("[tls] cert_file %s: %w", cfg.TLS.CertFile, err)
			}
			return cert, nil
		}
	}
}

func newDNSCheckCmd(a *app) *cobra.Command {
	var (
		resolver string
		caFile   string
		port     int
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check DOMAIN",
		Short: "Check DOMAIN's published MTA-STS and TLS-RPT records live",
		Long: `Check what senders see for DOMAIN: the _mta-sts TXT record (exactly one, with
the id of the policy this relay serves), mta-sts.DOMAIN (resolves, serves the
policy over HTTPS with a valid certificate), DOMAIN's MX hosts (each matches
the policy's mx patterns), and the _smtp._tls TXT record (one, well-formed,
sending reports to this relay). Each check prints ok, warn or fail, with a
fix. The exit status is 1 when a check fails.

DNS queries go to the resolver of relay.toml ([dns] resolver, else
/etc/resolv.conf), or to --resolver.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, found, err := a.loadConfig()
			if err != nil && !errors.Is(err, errNoConfig) {
				return err
			}
			if !found {
				cfg = config.Default()
			}
			opts := inbound.CheckOptions{Port: port, Timeout: timeout}
			if pol, err := configuredPolicy(cfg, args[0]); err == nil {
				opts.Policy = &pol
				opts.ReportURL = reportURL(cfg, pol.Domain)
			} else {
				fmt.Fprintf(a.stderr, "note: %v; checking what is published only\n", err)
			}
			if resolver == "" {
				if resolver, err = cfg.DNSResolverAddr(); err != nil {
					return fmt.Errorf("%w (give --resolver HOST:PORT)", err)
				}
			}
			opts.Resolver = secpolicyResolver{secpolicy.NewResolver(secpolicy.ResolverConfig{
				Addr: resolver, TrustAD: cfg.DNS.TrustAD, Timeout: timeout, Logger: slog.New(slog.DiscardHandler),
			})}
			if caFile != "" {
				if opts.RootCAs, err = loadCAFile(caFile); err != nil {
					return err
				}
			}
			return a.dnsCheck(cmd.Context(), args[0], opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&resolver, "resolver", "", "DNS resolver `host:port` (default: [dns] resolver of relay.toml)")
	f.StringVar(&caFile, "ca-file", "", "PEM `file` of CA certificates to trust instead of the system roots")
	f.IntVar(&port, "port", 443, "HTTPS `port` of the policy host")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "time limit of each query and of the policy fetch")
	return cmd
}

func (a *app) dnsCheck(ctx context.Context, domain string, opts inbound.CheckOptions) error {
	results := inbound.Check(ctx, domain, opts)
	failed := 0
	for _, r := range results {
		if r.Status == inbound.StatusFail {
			failed++
		}
	}
	if a.jsonOut {
		type jsonResult struct {
			Check   string `json:"check"`
			Status  string `json:"status"`
			Message string `json:"message"`
			Fix     string `json:"fix,omitempty"`
		}
		out := make([]jsonResult, len(results))
		for i, r := range results {
			out[i] = jsonResult{r.Check, string(r.Status), r.Message, r.Fix}
		}
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else {
		tw := a.table()
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Status, r.Check, clean(r.Message))
			if r.Fix != "" {
				fmt.Fprintf(tw, "\t\tfix: %s\n", clean(r.Fix))
			}
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s failed for %s", plural(failed, "check"), strings.TrimSuffix(domain, "."))
	}
	return nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// errNoConfig is returned by loadConfig when no configuration file exists.
var errNoConfig = errors.New("no configuration file: give --config FILE (or create ./relay.toml)")

// loadConfig reads the configuration named by --config, else the first of
// the default paths that exists. found is false (with errNoConfig) when
// there is none.
func (a *app) loadConfig() (cfg *config.Config, found bool, err error) {
	path := a.configPath
	if path == "" {
		for _, p := range defaultConfigPaths() {
			_, err := os.Stat(p)
			if err == nil {
				path = p
				break
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, false, fmt.Errorf("configuration %s: %w", p, err)
			}
		}
	}
	if path == "" {
		return nil, false, errNoConfig
	}
	cfg, err = config.Load(path)
	if err != nil {
		return nil, true, err
	}
	return cfg, true, nil
}

// secpolicyResolver adapts the relay's resolver to inbound.Resolver.
type secpolicyResolver struct{ r *secpolicy.Resolver }

func (s secpolicyResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return s.r.LookupTXT(ctx, name)
}

func (s secpolicyResolver) LookupMX(ctx context.Context, domain string) ([]string, error) {
	res, err := s.r.LookupMX(ctx, domain)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, h := range res.Hosts {
		if !h.Implicit {
			hosts = append(hosts, h.Name)
		}
	}
	return hosts, nil
}

func (s secpolicyResolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	res, err := s.r.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	return res.Addrs, nil
}
