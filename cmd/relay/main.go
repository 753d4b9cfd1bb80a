// Command relay is the relay daemon: `relay serve` accepts mail over SMTP,
// queues it durably and delivers it with DANE, MTA-STS or opportunistic
// TLS; `relay config check` validates a configuration file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/relay"
	"github.com/relaysec/relay/relay/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr).Execute(); err != nil {
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			fmt.Fprintf(os.Stderr, "relay: the configuration has %d problem(s):\n%v\n", len(cerrs.List), err)
		} else {
			fmt.Fprintln(os.Stderr, "relay:", err)
		}
		os.Exit(1)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "relay",
		Short:         "Outbound SMTP relay with DANE, MTA-STS and TLS reporting",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServeCmd(stderr), newConfigCmd(stdout), &cobra.Command{
		Use:     "version",
		Short:   "Print the relay's version",
		Example: "  relay version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "relay", buildVersion())
		},
	})
	return root
}

// loadConfig reads path, or the embedded default when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func newServeCmd(stderr io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay daemon",
		Long: `Run the relay daemon. Without --config it runs on an embedded default that is safe
on a laptop: SMTP intake on 127.0.0.1:2525 for loopback clients only, data in
./relay-data, accepted mail held until released.

SIGHUP (systemctl reload relay) or "relayctl reload" reads the --config file
again: certificates, users, routes, MTA-STS policies served and the log level
change at once; other changed settings are logged as needing a restart, and a
file with problems is refused while the running configuration stays in force.
SIGTERM and SIGINT stop the daemon after transactions in progress. Started by
systemd with Type=notify, it reports readiness on $NOTIFY_SOCKET.`,
		Example: `  relay serve                                  # embedded default, try it out
  relay serve --config /etc/relay/relay.toml
  kill -HUP "$(pidof relay)"                   # reload the configuration file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			level := new(slog.LevelVar)
			log := newLogger(stderr, cfg.Log, level)
			if path == "" {
				log.Info("no --config given: using the embedded default configuration (see `relay config default`)")
			}
			for _, w := range cfg.Warnings {
				log.Warn("configuration: " + w)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return relay.Run(ctx, cfg, relay.Options{Version: buildVersion(), Logger: log, ConfigPath: path, LogLevel: level})
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "configuration file (default: embedded default)")
	return cmd
}

// newLogger returns the daemon's logger writing to w in the format of c,
// at the level of c, which it stores in level so that a configuration
// reload can change it.
func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		l = slog.LevelInfo
	}
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newConfigCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check or print configuration"}
	var path string
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a configuration file and report every problem with its line",
		Example: `  relay config check --config /etc/relay/relay.toml
  relay config check --config relay.toml && sudo systemctl reload relay`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return errors.New("config check: --config FILE is required")
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintln(stdout, "warning:", w)
			}
			fmt.Fprintf(stdout, "%s: OK (%d listener(s), data_dir %s)\n", path, len(cfg.Listeners), cfg.DataDir)
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "configuration file to check")
	def := &cobra.Command{
		Use:     "default",
		Short:   "Print the embedded default configuration",
		Example: "  relay config default > relay.toml",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			stdout.Write(config.DefaultTOML())
		},
	}
	cmd.AddCommand(check, def)
	return cmd
}
