package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newReloadCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the daemon read its configuration file again",
		Long: `Make the running daemon read its configuration file again, as SIGHUP
(systemctl reload relay) does, and print what changed.

Applied at once: the intake certificate ([tls]) and users ([[user]]),
routes ([[route]]), delivery.hold, the MTA-STS policies served and the
inbound certificates ([[inbound.mta_sts]], [inbound] cert_file/key_file,
[[inbound.cert]]), and [log] level. Certificate files are read again even
when their names did not change.

Every other setting that changed (listener addresses, data_dir, workers,
...) keeps its old value until the daemon restarts; they are listed as
"needs a restart".

A configuration with problems is refused as a whole: relayctl prints every
problem with its line, exits with status 1, and the daemon keeps running
on its current configuration. A daemon started without --config has no
file to read again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.Reload(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(res)
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(a.stderr, "warning: %s\n", clean(w))
			}
			tw := a.table()
			fmt.Fprintf(tw, "Reloaded:\t%s\n", clean(res.Config))
			if len(res.Changed) == 0 {
				fmt.Fprintln(tw, "Changed:\tnothing (certificate files were read again)")
			} else {
				fmt.Fprintf(tw, "Changed:\t%s (now in force)\n", clean(strings.Join(res.Changed, ", ")))
			}
			if len(res.RestartNeeded) > 0 {
				fmt.Fprintf(tw, "Needs a restart:\t%s (old values stay in force until then)\n", clean(strings.Join(res.RestartNeeded, ", ")))
			}
			if err := tw.Flush(); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			return nil
		},
	}
}
