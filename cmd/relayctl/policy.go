package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/tlsstats"
)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show the transport security the relay applies to a destination",
	}
	var probe bool
	lookup := &cobra.Command{
		Use:   "lookup DOMAIN",
		Short: "Show a domain's MX hosts and, per host, the policy the relay would apply and why",
		Long: `Resolve DOMAIN as a delivery would, through the daemon's resolver, and show
its MX hosts in order with, for each, the DNSSEC status of its address records,
the TLSA base domain and records with their usable/unusable verdicts, and the
policy the relay would apply (dane, dane-unauth, opportunistic, ...).
With --probe, also connect to each host, run STARTTLS with that policy's
certificate verification and quit without sending mail.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fetchAndPrint(a, cmd.Context(),
				func(ctx context.Context, c *admin.Client) (*deliver.Explanation, error) {
					return c.PolicyLookup(ctx, args[0], probe)
				},
				func(ex *deliver.Explanation) error { a.printExplanation(ex); return nil })
		},
	}
	lookup.Flags().BoolVar(&probe, "probe", false, "connect to each host and verify its certificate (no mail is sent)")
	cmd.AddCommand(lookup, newPolicyCacheCmd(a), newPolicyStatsCmd(a))
	return cmd
}

func newPolicyCacheCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "List or flush the cached MTA-STS policies"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the cached MTA-STS policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(a, cmd.Context(),
				func(ctx context.Context, c *admin.Client) ([]admin.CachedPolicy, error) { return c.PolicyCache(ctx) },
				a.printPolicyCache)
		},
	}
	flush := &cobra.Command{
		Use:   "flush [DOMAIN]",
		Short: "Drop the cached MTA-STS policy of DOMAIN, or of every domain",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			domain := ""
			if len(args) == 1 {
				domain = args[0]
			}
			if err := c.FlushPolicyCache(cmd.Context(), domain); err != nil {
				return err
			}
			if domain == "" {
				domain = "every domain"
			}
			fmt.Fprintf(a.stdout, "Flushed the cached MTA-STS policy of %s.\n", domain)
			return nil
		},
	}
	cmd.AddCommand(list, flush)
	return cmd
}

func (a *app) printExplanation(ex *deliver.Explanation) {
	out := a.stdout
	fmt.Fprintf(out, "Domain:       %s\n", ex.Domain)
	if ex.Route != nil {
		fmt.Fprintf(out, "Route:        next hop %s, security %s\n", orDash(ex.Route.NextHop), orDash(ex.Route.Security))
	}
	if ex.Error != "" {
		fmt.Fprintf(out, "MX:           %s\n", clean(ex.Error))
		return
	}
	if ex.Verdict != "" {
		fmt.Fprintf(out, "MX:           %s\n", clean(ex.Verdict))
		return
	}
	fmt.Fprintf(out, "MX records:   %s\n", ex.MXSecurity)
	if st := ex.MTASTS; st != nil {
		switch {
		case st.Mode != "":
			src := "fetched now"
			if st.FromCache {
				src = "cached"
			}
			fmt.Fprintf(out, "MTA-STS:      mode %s, id %s, mx %s, max_age %ds, expires %s (%s)\n",
				st.Mode, st.ID, strings.Join(st.MX, " "), st.MaxAge, fmtTime(st.Expires), src)
		default:
			fmt.Fprintln(out, "MTA-STS:      no policy")
		}
		if st.FetchError != "" {
			fmt.Fprintf(out, "              fetch failed: %s\n", clean(st.FetchError))
		}
		if st.DNSError != "" {
			fmt.Fprintf(out, "              DNS: %s\n", clean(st.DNSError))
		}
	}
	for _, h := range ex.Hosts {
		fmt.Fprintf(out, "\nMX %d %s\n", h.Preference, h.Host)
		tw := a.table()
		if len(h.Addrs) > 0 {
			fmt.Fprintf(tw, "  addresses:\t%s (%s)\n", strings.Join(h.Addrs, " "), h.AddrSecurity)
		}
		if h.STSListed != nil {
			listed := "listed in the MTA-STS policy"
			if !*h.STSListed {
				listed = "NOT listed in the MTA-STS policy"
			}
			fmt.Fprintf(tw, "  MTA-STS:\t%s\n", listed)
		}
		if h.TLSAName != "" {
			fmt.Fprintf(tw, "  TLSA:\t%s (base domain %s)\n", h.TLSAName, h.TLSABase)
			for _, r := range h.TLSA {
				verdict := "usable"
				if !r.Usable {
					verdict = "unusable: " + r.Unusable
				}
				fmt.Fprintf(tw, "  \t%s\t%s\n", r.Record, verdict)
			}
		}
		if h.Error != "" {
			fmt.Fprintf(tw, "  policy:\tnone: %s\n", clean(h.Error))
		} else {
			fmt.Fprintf(tw, "  policy:\t%s: %s\n", h.Policy, clean(h.Reason))
		}
		if p := h.Probe; p != nil {
			fmt.Fprintf(tw, "  probe:\t%s\n", p.IP)
			if p.Greeting != "" {
				fmt.Fprintf(tw, "  \tgreeting: %s\n", clean(truncate(p.Greeting, 100)))
			}
			fmt.Fprintf(tw, "  \tSTARTTLS offered: %s\n", yesNo(p.STARTTLS))
			if p.TLSVersion != "" {
				fmt.Fprintf(tw, "  \tTLS: %s %s\n", p.TLSVersion, p.TLSCipher)
			}
			if p.Verification != "" {
				fmt.Fprintf(tw, "  \tcertificate: %s\n", clean(p.Verification))
			}
			if p.Error != "" {
				fmt.Fprintf(tw, "  \terror: %s\n", clean(p.Error))
			}
		}
		tw.Flush()
	}
}

func newPolicyStatsCmd(a *app) *cobra.Command {
	var since, domain string
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show outbound TLS session counts per recipient policy domain and day",
		Long: `Show, per recipient policy domain and UTC day, how many TLS sessions the relay
made under which policy type (tlsa, sts, no-policy-found), how many failed, and
the failures by RFC 8460 result type and MX host: the figures a TLS-RPT report
about that domain would carry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(a, cmd.Context(),
				func(ctx context.Context, c *admin.Client) ([]tlsstats.Counts, error) {
					return c.TLSStats(ctx, since, domain)
				},
				a.printTLSStats)
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "first day, YYYY-MM-DD (default: a week ago)")
	cmd.Flags().StringVar(&domain, "domain", "", "only this policy domain")
	return cmd
}

func (a *app) printPolicyCache(entries []admin.CachedPolicy) error {
	if len(entries) == 0 {
		fmt.Fprintln(a.stdout, "No MTA-STS policies cached.")
		return nil
	}
	tw := a.table()
	fmt.Fprintln(tw, "DOMAIN\tMODE\tID\tMX\tMAX AGE\tEXPIRES\tLAST USED")
	for _, e := range entries {
		expires := fmtTime(e.Expires)
		if e.Expired {
			expires += " (expired)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%ds\t%s\t%s\n", e.Domain, e.Mode, e.ID, strings.Join(e.MX, " "), e.MaxAge, expires, fmtTime(e.LastUsed))
	}
	return tw.Flush()
}

func (a *app) printTLSStats(counts []tlsstats.Counts) error {
	if len(counts) == 0 {
		fmt.Fprintln(a.stdout, "No TLS sessions counted in that period.")
		return nil
	}
	tw := a.table()
	fmt.Fprintln(tw, "DAY\tPOLICY DOMAIN\tPOLICY\tSUCCESSES\tFAILURES\tFAILURE DETAILS")
	for _, c := range counts {
		var details []string
		for _, f := range c.Failures {
			details = append(details, fmt.Sprintf("%s %s [%s] ×%d", f.ResultType, orDash(f.ReceivingMX), orDash(f.ReceivingIP), f.Count))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", c.Day, c.PolicyDomain, c.PolicyType, c.Success, c.Failure, strings.Join(details, "; "))
	}
	return tw.Flush()
}
