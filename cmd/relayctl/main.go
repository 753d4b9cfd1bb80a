// Command relayctl administers a running relay daemon through its admin
// socket: it inspects and manages the queue and hashes passwords for
// relay.toml.
//
// relayctl never opens the queue database itself (bbolt allows one writing
// process); it calls the daemon's admin API, JSON over HTTP on a unix
// socket. The socket is found with --socket, or from --config, or from
// ./relay.toml, /etc/relay/relay.toml or the built-in default, in that
// order. Output is an aligned table, or the API's JSON with --json.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes relayctl with args and returns the process exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "relayctl: %v\n", err)
		return 1
	}
	return 0
}
