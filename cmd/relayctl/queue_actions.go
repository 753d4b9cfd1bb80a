package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/relay/admin"
)

// action is a per-message queue operation of relayctl.
type action struct {
	name  string // command name
	short string // one-line help
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
		do:   func(ctx context.Context, c *admin.Client, id string) (int, error) { return c.Retry(ctx, id) },
		report: func(n int) string {
			if n == 0 {
				return "nothing to retry (no recipient waiting for a later attempt)"
			}
			return plural(n, "recipient") + " due for delivery now"
		},
	}
}

func deleteAction() action {
	return action{
		name:  "delete",
		short: "Delete messages from the queue without notifying anyone",
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
		Use:   act.name + " ID...",
		Short: act.short,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("queue %s needs at least one message ID", act.name)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.runAction(cmd.Context(), c, act, ids)
		},
	}
}

// runAction applies act to each message, reporting per ID, and fails if
// any of them failed. It stops at once when the daemon cannot be reached.
func (a *app) runAction(ctx context.Context, c *admin.Client, act action, ids []string) error {
	results := make([]actionResult, 0, len(ids))
	failed := 0
	for _, id := range ids {
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
			failed++
			res.Error = err.Error()
			if !a.jsonOut {
				fmt.Fprintf(a.stderr, "%s: %v\n", clean(id), err)
			}
		case n < 0:
			res.Deleted = true
		default:
			res.Changed = &n
		}
		if err == nil && !a.jsonOut {
			fmt.Fprintf(a.stdout, "%s: %s\n", clean(id), act.report(n))
		}
		results = append(results, res)
	}
	if a.jsonOut {
		if err := a.printJSON(results); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s failed for %d of %s", act.name, failed, plural(len(ids), "message"))
	}
	return nil
}

func newQueueRetryCmd(a *app) *cobra.Command {
	var domain string
	var all bool
	cmd := &cobra.Command{
		Use:   "retry ID... | --domain D | --all",
		Short: "Attempt delivery now instead of at the scheduled retry time",
		Long: `Make recipients that wait for a later attempt due now: those of the given
messages, of every message with a recipient at --domain, or of the whole
queue with --all.`,
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
				return a.runAction(ctx, c, retryAction(), ids)
			}
			var n int
			if all {
				n, err = c.RetryAll(ctx)
			} else {
				n, err = c.RetryDomain(ctx, domain)
			}
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
