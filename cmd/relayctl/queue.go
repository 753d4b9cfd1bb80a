package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
)

// knownStates returns the recipient states in the order they are shown.
func knownStates() []queue.State {
	return []queue.State{queue.StateQueued, queue.StateDeferred, queue.StateHeld, queue.StateDelivered, queue.StateFailed}
}

func newQueueCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and manage the delivery queue",
	}
	cmd.AddCommand(
		newQueueInspectCmd(a),
		newQueueListCmd(a),
		newQueueShowCmd(a),
		newQueueActionCmd(a, holdAction()),
		newQueueActionCmd(a, releaseAction()),
		newQueueActionCmd(a, bounceAction()),
		newQueueActionCmd(a, deleteAction()),
		newQueueRetryCmd(a),
	)
	return cmd
}

func newQueueInspectCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect",
		Short: "Summarize the queue: counts by state and destination, oldest message, next retry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(a, cmd.Context(),
				func(ctx context.Context, c *admin.Client) (*queue.Stats, error) { return c.Stats(ctx) },
				func(st *queue.Stats) error { return a.printStats(st, time.Now()) })
		},
	}
}

// domainCount is one line of the per-domain table.
type domainCount struct {
	domain string
	n      int
}

// sortedDomains returns the per-domain counts, largest first, then by name.
func sortedDomains(m map[string]int) []domainCount {
	out := make([]domainCount, 0, len(m))
	for d, n := range m {
		out = append(out, domainCount{d, n})
	}
	slices.SortFunc(out, func(x, y domainCount) int {
		if c := cmp.Compare(y.n, x.n); c != 0 {
			return c
		}
		return cmp.Compare(x.domain, y.domain)
	})
	return out
}

func (a *app) printStats(st *queue.Stats, now time.Time) error {
	tw := a.table()
	fmt.Fprintf(tw, "Messages:\t%d\n", st.Messages)
	fmt.Fprintf(tw, "Total size:\t%s\n", fmtSize(st.Bytes))
	if st.OldestID != "" {
		fmt.Fprintf(tw, "Oldest:\t%s, received %s (%s ago)\n", st.OldestID, fmtTime(st.Oldest), fmtAge(now.Sub(st.Oldest)))
	} else {
		fmt.Fprintf(tw, "Oldest:\t-\n")
	}
	if !st.NextRetry.IsZero() {
		fmt.Fprintf(tw, "Next retry:\t%s (%s)\n", fmtNext(st.NextRetry, now), fmtTime(st.NextRetry))
	} else {
		fmt.Fprintf(tw, "Next retry:\t- (no recipient waiting)\n")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "STATE\tRECIPIENTS")
	known := knownStates()
	for _, s := range known {
		fmt.Fprintf(tw, "%s\t%d\n", s, st.Recipients[s])
	}
	for s, n := range st.Recipients { // states this relayctl does not know
		if !slices.Contains(known, s) {
			fmt.Fprintf(tw, "%s\t%d\n", clean(string(s)), n)
		}
	}
	if len(st.Domains) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "DOMAIN\tUNDELIVERED")
		for _, d := range sortedDomains(st.Domains) {
			fmt.Fprintf(tw, "%s\t%d\n", orDash(d.domain), d.n)
		}
	}
	return tw.Flush()
}

func newQueueListCmd(a *app) *cobra.Command {
	var opts admin.ListOptions
	var state string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List queued messages, one line per recipient",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.State = queue.State(state)
			if opts.Limit < 1 || opts.Limit > admin.MaxListLimit {
				return fmt.Errorf("--limit must be from 1 to %d", admin.MaxListLimit)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			msgs, err := c.List(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if len(msgs) == opts.Limit {
				fmt.Fprintf(a.stderr, "relayctl: showing the first %d messages; use --limit for more\n", opts.Limit)
			}
			if a.jsonOut {
				return a.printJSON(msgs)
			}
			return a.printList(msgs, opts, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only messages with a recipient in this `state` (queued, deferred, held, delivered, failed)")
	f.StringVar(&opts.Domain, "domain", "", "only messages with a recipient in this `domain`")
	f.IntVar(&opts.Limit, "limit", admin.DefaultListLimit, fmt.Sprintf("show at most `N` messages (up to %d)", admin.MaxListLimit))
	return cmd
}

func (a *app) printList(msgs []admin.MessageSummary, opts admin.ListOptions, now time.Time) error {
	if len(msgs) == 0 {
		if opts.State != "" || opts.Domain != "" {
			fmt.Fprintln(a.stdout, "No messages match.")
		} else {
			fmt.Fprintln(a.stdout, "The queue is empty.")
		}
		return nil
	}
	tw := a.table()
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tFROM\tRECIPIENT\tSTATE\tTRIES\tNEXT\tLAST ERROR")
	for _, m := range msgs {
		for i, r := range m.Recipients {
			if i == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t", m.ID, fmtAge(now.Sub(m.ReceivedAt)), fmtSize(m.Size), sender(m.From))
			} else {
				fmt.Fprint(tw, "\t\t\t\t")
			}
			next := "-"
			if r.State.Pending() {
				next = fmtNext(r.NextAttempt, now)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", clean(r.Addr), clean(string(r.State)), r.Attempts, next, truncate(orDash(r.LastError), 72))
		}
	}
	return tw.Flush()
}
