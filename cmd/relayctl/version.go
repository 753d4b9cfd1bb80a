package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/relay/admin"
)

// buildVersion returns the module version relayctl was built from, with
// the VCS revision when the build recorded one.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}

// versionInfo is the --json output of `relayctl version`.
type versionInfo struct {
	Relayctl    string        `json:"relayctl"`
	Daemon      *admin.Status `json:"daemon,omitempty"`
	DaemonError string        `json:"daemon_error,omitempty"`
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of relayctl and of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{Relayctl: buildVersion()}
			c, err := a.client()
			if err == nil {
				defer c.Close()
				info.Daemon, err = c.Status(cmd.Context())
			}
			if err != nil {
				// The daemon's version is extra information: its absence
				// is not an error of this command.
				info.DaemonError = err.Error()
			}
			if a.jsonOut {
				return a.printJSON(info)
			}
			fmt.Fprintf(a.stdout, "relayctl %s\n", info.Relayctl)
			if info.Daemon != nil {
				d := info.Daemon
				fmt.Fprintf(a.stdout, "relay daemon %s (pid %d, up %s, socket %s)\n", orDash(d.Version), d.PID, d.Uptime, c.SocketPath())
			} else {
				fmt.Fprintf(a.stdout, "daemon: %s\n", info.DaemonError)
			}
			return nil
		},
	}
}
