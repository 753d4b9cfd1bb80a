package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/queue"
)

func newQueueShowCmd(a *app) *cobra.Command {
	var body bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a message's envelope, recipients and delivery attempts",
		Long: `Show a message's envelope, its recipients with their delivery state, and
its delivery attempts with the security policy and TLS details of each.
With --body, print the raw message as spooled instead.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("queue show takes one message ID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if body {
				_, err := c.Body(cmd.Context(), args[0], a.stdout)
				return err
			}
			m, err := c.Message(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(m)
			}
			return a.printMessage(m, time.Now())
		},
	}
	cmd.Flags().BoolVar(&body, "body", false, "print the raw message (headers and body) instead")
	return cmd
}

func (a *app) printMessage(m *queue.Message, now time.Time) error {
	tw := a.table()
	fmt.Fprintf(tw, "ID:\t%s\n", m.ID)
	fmt.Fprintf(tw, "From:\t%s\n", sender(m.From))
	fmt.Fprintf(tw, "Received:\t%s (%s ago)\n", fmtTime(m.ReceivedAt), fmtAge(now.Sub(m.ReceivedAt)))
	fmt.Fprintf(tw, "Size:\t%s (%d bytes)\n", fmtSize(m.Size), m.Size)
	client := orDash(m.ClientAddr)
	if m.ClientHelo != "" {
		client += " (HELO " + clean(m.ClientHelo) + ")"
	}
	fmt.Fprintf(tw, "Client:\t%s\n", client)
	fmt.Fprintf(tw, "Auth user:\t%s\n", orDash(m.AuthUser))
	fmt.Fprintf(tw, "BODY:\t%s\n", orDash(m.Body))
	fmt.Fprintf(tw, "SMTPUTF8:\t%s\n", yesNo(m.SMTPUTF8))
	fmt.Fprintf(tw, "REQUIRETLS:\t%s\n", yesNo(m.RequireTLS))
	fmt.Fprintf(tw, "RET:\t%s\n", orDash(m.DSNRet))
	fmt.Fprintf(tw, "ENVID:\t%s\n", orDash(m.DSNEnvID))
	if m.Bounce {
		fmt.Fprintf(tw, "Bounce:\tyes (delivery status notification made by the relay)\n")
	}
	if m.DelayWarned {
		fmt.Fprintf(tw, "Delay warning:\tsent\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	tw = a.table()
	fmt.Fprintln(tw, "RECIPIENT\tSTATE\tTRIES\tNEXT ATTEMPT\tNOTIFY\tORCPT\tLAST ERROR")
	for _, r := range m.Recipients {
		next := "-"
		if r.State.Pending() {
			next = fmtNext(r.NextAttempt, now)
			if next != "now" {
				next += " (" + fmtTime(r.NextAttempt) + ")"
			}
		}
		notify := "-"
		if len(r.Notify) > 0 {
			notify = clean(strings.Join(r.Notify, ","))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			clean(r.Addr), clean(string(r.State)), r.Attempts, next, notify, orDash(r.ORcpt), orDash(r.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	if len(m.Attempts) == 0 {
		fmt.Fprintln(a.stdout, "No delivery attempts yet.")
		return nil
	}
	tw = a.table()
	fmt.Fprintln(tw, "TIME\tHOST\tIP\tPOLICY\tTLS\tVERIFICATION\tRESULT\tREPLY")
	for _, at := range m.Attempts {
		tls := "-"
		if at.TLSVersion != "" {
			tls = clean(strings.TrimSpace(at.TLSVersion + " " + at.TLSCipher))
		}
		reply := at.Reply
		if at.Error != "" {
			if reply != "" {
				reply += "; "
			}
			reply += at.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			fmtTime(at.Time), orDash(at.Host), orDash(at.IP), orDash(at.Policy), tls,
			orDash(at.Verification), orDash(at.Result), orDash(reply))
	}
	return tw.Flush()
}
