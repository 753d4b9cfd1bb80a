package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"

	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
)

// defaultConfigPaths are tried in order when neither --socket nor --config
// is given.
func defaultConfigPaths() []string {
	return []string{"relay.toml", "/etc/relay/relay.toml"}
}

// app is the state shared by the commands of one relayctl run: the global
// flags and the output streams.
type app struct {
	stdout, stderr io.Writer

	configPath string
	socketPath string
	jsonOut    bool
}

// newRootCmd builds the relayctl command tree writing to stdout and stderr.
// Errors are returned from Execute, not printed.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "relayctl",
		Short: "Administer a running relay daemon",
		Long: `relayctl administers a running relay daemon through its admin socket.

The socket is found with --socket, else from the configuration named by
--config (data_dir and [admin] socket), else from ./relay.toml, else from
/etc/relay/relay.toml, else at the built-in default ./relay-data/relay.sock.
The socket is mode 0600: run relayctl as the user the daemon runs as (or
root), for example "sudo -u relay relayctl queue inspect".

Every command has examples in its --help. Shell completion: see
"relayctl completion --help".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "relay configuration `file` to find the admin socket in")
	pf.StringVar(&a.socketPath, "socket", "", "admin socket `path` (overrides --config)")
	pf.BoolVar(&a.jsonOut, "json", false, "print the admin API's JSON instead of tables")

	root.AddCommand(newQueueCmd(a), newUserCmd(a), newVersionCmd(a), newPolicyCmd(a))
	root.AddCommand(newDNSCmd(a))
	root.AddCommand(newReportsCmd(a))
	root.AddCommand(newReloadCmd(a))
	// Cobra adds the completion command when the tree runs; adding it
	// now gives it examples like every other command.
	root.InitDefaultCompletionCmd()
	addExamples(root)
	return root
}

// client returns an admin API client for the discovered socket.
func (a *app) client() (*admin.Client, error) {
	path, err := discoverSocket(a.socketPath, a.configPath, defaultConfigPaths())
	if err != nil {
		return nil, err
	}
	return admin.NewClient(path), nil
}

// discoverSocket finds the admin socket: socketFlag if set; else the socket
// of the configuration file configFlag; else that of the first of
// candidates that exists; else that of the built-in default configuration.
func discoverSocket(socketFlag, configFlag string, candidates []string) (string, error) {
	if socketFlag != "" {
		return socketFlag, nil
	}
	if configFlag != "" {
		return socketFromConfig(configFlag)
	}
	for _, p := range candidates {
		_, err := os.Stat(p)
		if err == nil {
			return socketFromConfig(p)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("cannot find the admin socket: %w (give --socket PATH)", err)
		}
	}
	return config.Default().AdminSocketPath(), nil
}

func socketFromConfig(path string) (string, error) {
	cfg, err := config.Load(path)
	if err == nil {
		return cfg.AdminSocketPath(), nil
	}
	// A file with problems (just edited, say) still names the socket of
	// the daemon, which runs on the configuration it loaded before: use
	// it, so that `relayctl reload` gets the daemon to report the problems
	// and the other commands keep working.
	var cerrs *config.Errors
	if errors.As(err, &cerrs) {
		if socket, ok := lenientSocketPath(path); ok {
			return socket, nil
		}
	}
	return "", fmt.Errorf("cannot find the admin socket: %w (fix the file or give --socket PATH)", err)
}

// lenientSocketPath reads only data_dir and [admin] socket from a
// configuration file that does not pass validation; ok is false when the
// file is not even TOML or has no data_dir.
func lenientSocketPath(path string) (socket string, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var doc struct {
		DataDir string `toml:"data_dir"`
		Admin   struct {
			Socket string `toml:"socket"`
		} `toml:"admin"`
	}
	if err := toml.Unmarshal(data, &doc); err != nil || doc.DataDir == "" {
		return "", false
	}
	cfg := config.Config{DataDir: doc.DataDir, Admin: config.Admin{Socket: doc.Admin.Socket}}
	if cfg.Admin.Socket == "" {
		cfg.Admin.Socket = config.Default().Admin.Socket
	}
	return cfg.AdminSocketPath(), true
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	b = append(b, '\n')
	if _, err := a.stdout.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// table returns a tabwriter for aligned columns on stdout; call Flush.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
}

// fetchAndPrint runs the usual shape of a read command: it calls fetch
// with a client for the daemon, then prints the answer as JSON (--json)
// or with print.
func fetchAndPrint[T any](a *app, ctx context.Context, fetch func(context.Context, *admin.Client) (T, error), print func(T) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := fetch(ctx, c)
	if err != nil {
		return err
	}
	if a.jsonOut {
		return a.printJSON(v)
	}
	return print(v)
}
