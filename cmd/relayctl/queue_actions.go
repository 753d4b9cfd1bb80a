package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
)

// action is a per-message queue operation of relayctl.
type action struct {
	name  string // command name
	short string // one-line help
	past  string // the verb of the final count: "held", "deleted"
	// do performs the action and returns how many recipients it changed
	// (-1 when the action does not count recipients).
	do func(ctx context.Context, c *admin.Client, id string) (int, error)
	// report describes a successful result for the text output.
	report func(changed int) string
}

func holdAction() action {
	return action{
		name:  "hold",
		short: "Stop delivery of messages until they are released",
		past:  "held",
		do:    func(ctx context.Context, c *admin.Client, id string) (int, error) { return c.Hold(ctx, id) },
		report: func(n int) string {
			if n == 0 {
				return "nothing to hold (no queued or deferred recipient)"
			}
			return "held " + plural(n, "recipient")
		},
	}
}

func releaseAction() action {
	return action{
		name:  "release",
		short: "Release held messages for delivery now",
		past:  "released",
		do:    func(ctx context.Context, c *admin.Client, id string) (int, error) { return c.Release(ctx, id) },
		report: func(n int) string {
			if n == 0 {
				return "nothing to release (no held recipient)"
			}
			return "released " + plural(n, "recipient") + " for delivery now"
		},
	}
}

func retryAction() action {
	return action{
		name: "retry",
		past: "retried",
		do:   func(ctx context.Context, c *admin.Client, id string) (int, error) { return c.Retry(ctx, id) },
		report: func(n int) string {
			if n == 0 {
				return "nothing to retry (no recipient waiting for a later attempt)"
			}
			return plural(n, "recipient") + " due for delivery now"
		},
	}
}

func bounceAction() action {
	return action{
		name:  "bounce",
		short: "Return messages to their senders now, with a delivery status notification",
		past:  "bounced",
		do:    func(ctx context.Context, c *admin.Client, id string) (int, error) { return c.Bounce(ctx, id) },
		report: func(n int) string {
			if n == 0 {
				return "nothing to bounce (every recipient already delivered or failed)"
			}
			return "bounced " + plural(n, "recipient") + "; the sender is notified as their NOTIFY asks"
		},
	}
}

func deleteAction() action {
	return action{
		name:  "delete",
		short: "Delete messages from the queue without notifying anyone",
		past:  "deleted",
		do: func(ctx context.Context, c *admin.Client, id string) (int, error) {
			return -1, c.Delete(ctx, id)
		},
		report: func(int) string { return "deleted" },
	}
}

// actionResult is the outcome of an action on one message, as printed by
// --json.
type actionResult struct {
	ID      string `json:"id"`
	Changed *int   `json:"changed,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

func newQueueActionCmd(a *app, act action) *cobra.Command {
	return &cobra.Command{
		Use:   act.name + " ID... | -",
		Short: act.short,
		Long: act.short + `.

Give the message IDs as arguments, or - to read them from standard input
(separated by spaces or newlines). Up to ` + fmt.Sprint(bulkVerboseMax) + ` IDs get a line each; more
show progress on standard error and a final count.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("queue %s needs at least one message ID (or - to read them from standard input)", act.name)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := readIDs(args, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.runAction(cmd.Context(), c, act, ids)
		},
	}
}

// runAction applies act to each message and fails if any of them failed.
// Up to bulkVerboseMax IDs are reported one by one; more show progress on
// standard error and a final count on standard output, and name only the
// IDs that failed. It stops at once when the daemon cannot be reached.
func (a *app) runAction(ctx context.Context, c *admin.Client, act action, ids []string) error {
	results := make([]actionResult, 0, len(ids))
	verbose := len(ids) <= bulkVerboseMax
	var prog *progress
	if !verbose {
		prog = newProgress(a.stderr, func(done, total int) string {
			return fmt.Sprintf("relayctl: queue %s: %d of %d messages done...", act.name, done, total)
		})
		defer prog.done()
	}
	var tally bulkTally
	recipients := 0
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := act.do(ctx, c, id)
		var ce *admin.ConnectError
		if errors.As(err, &ce) {
			return err
		}
		res := actionResult{ID: id}
		switch {
		case err != nil:
			res.Error = err.Error()
			notFound := errors.Is(err, queue.ErrNotFound)
			if notFound {
				tally.notFound = append(tally.notFound, id)
			} else {
				tally.failed = append(tally.failed, id)
			}
			if !a.jsonOut && (verbose || !notFound) {
				fmt.Fprintf(a.stderr, "%s: %v\n", clean(id), err)
			}
		case n < 0:
			res.Deleted = true
			tally.ok++
		default:
			res.Changed = &n
			recipients += n
			tally.ok++
		}
		if err == nil && verbose && !a.jsonOut {
			fmt.Fprintf(a.stdout, "%s: %s\n", clean(id), act.report(n))
		}
		results = append(results, res)
		if prog != nil {
			prog.update(i+1, len(ids))
		}
	}
	if prog != nil {
		prog.done()
	}
	if a.jsonOut {
		if err := a.printJSON(results); err != nil {
			return err
		}
	} else if !verbose {
		head := act.past + " " + plural(tally.ok, "message")
		if act.name != "delete" {
			head = fmt.Sprintf("%s %s in %s", act.past, plural(recipients, "recipient"), plural(tally.ok, "message"))
		}
		fmt.Fprintln(a.stdout, tally.summary(head))
	}
	if failed := len(tally.notFound) + len(tally.failed); failed > 0 {
		return fmt.Errorf("%s failed for %d of %s", act.name, failed, plural(len(ids), "message"))
	}
	return nil
}

func newQueueRetryCmd(a *app) *cobra.Command {
	var domain string
	var all bool
	cmd := &cobra.Command{
		Use:   "retry ID... | - | --domain D | --all",
		Short: "Attempt delivery now instead of at the scheduled retry time",
		Long: `Make recipients that wait for a later attempt due now: those of the given
messages (- reads the IDs from standard input), of every message with a
recipient at --domain, or of the whole queue with --all. On a large queue
--domain and --all show progress on standard error; the final count of
messages made due goes to standard output.`,
		RunE: func(cmd *cobra.Command, ids []string) error {
			modes := 0
			for _, set := range []bool{len(ids) > 0, domain != "", all} {
				if set {
					modes++
				}
			}
			if modes != 1 {
				return errors.New("give message IDs, --domain D or --all (exactly one of them)")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if len(ids) > 0 {
				if ids, err = readIDs(ids, cmd.InOrStdin()); err != nil {
					return err
				}
				return a.runAction(ctx, c, retryAction(), ids)
			}
			prog := newProgress(a.stderr, func(done, total int) string {
				return fmt.Sprintf("relayctl: queue retry: %d of %d messages done...", done, total)
			})
			n, err := c.RetryProgress(ctx, domain, prog.update)
			prog.done()
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(struct {
					Messages int `json:"messages"`
				}{n})
			}
			where := ""
			if domain != "" {
				where = " with recipients at " + clean(domain)
			}
			if n == 0 {
				fmt.Fprintf(a.stdout, "No messages%s were waiting for a retry.\n", where)
			} else {
				fmt.Fprintf(a.stdout, "%s%s due for delivery now.\n", plural(n, "message"), where)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "retry every message with a recipient at `domain`")
	cmd.Flags().BoolVar(&all, "all", false, "retry the whole queue")
	return cmd
}
