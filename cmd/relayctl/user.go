package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

// defaultBcryptCost is the cost of hashes made by `relayctl user hash`.
const defaultBcryptCost = 12

// maxPasswordLine bounds what is read from a pipe for one password.
const maxPasswordLine = 4096

func newUserCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage SMTP AUTH accounts",
	}
	cmd.AddCommand(newUserHashCmd(a))
	return cmd
}

func newUserHashCmd(a *app) *cobra.Command {
	var cost int
	cmd := &cobra.Command{
		Use:   "hash",
		Short: "Hash a password with bcrypt for a [[user]] password_hash",
		Long: `Read a password and print its bcrypt hash for the password_hash key of a
[[user]] table in relay.toml. On a terminal the password is asked for twice
without echo; otherwise the first line of standard input is the password.
This command does not need the daemon.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
				return fmt.Errorf("--cost must be from %d to %d", bcrypt.MinCost, bcrypt.MaxCost)
			}
			password, err := a.readPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			if len(password) == 0 {
				return errors.New("empty password refused")
			}
			hash, err := bcrypt.GenerateFromPassword(password, cost)
			if errors.Is(err, bcrypt.ErrPasswordTooLong) {
				return fmt.Errorf("password is %d bytes long; bcrypt uses at most 72", len(password))
			}
			if err != nil {
				return fmt.Errorf("hash password: %w", err)
			}
			if a.jsonOut {
				if err := a.printJSON(struct {
					PasswordHash string `json:"password_hash"`
				}{string(hash)}); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintf(a.stdout, "%s\n", hash); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			fmt.Fprintf(a.stderr, "hint: paste it into relay.toml as password_hash = %q in the account's [[user]] table\n", hash)
			return nil
		},
	}
	cmd.Flags().IntVar(&cost, "cost", defaultBcryptCost, "bcrypt cost (work factor)")
	return cmd
}

// readPassword reads a password: from the terminal without echo, asked
// twice, when in is one; else the first line of in, without its line
// ending.
func (a *app) readPassword(in io.Reader) ([]byte, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return a.readTerminalPassword(int(f.Fd()))
	}
	line, err := bufio.NewReader(io.LimitReader(in, maxPasswordLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if err != nil && len(line) == maxPasswordLine {
		return nil, fmt.Errorf("read password: first line longer than %d bytes", maxPasswordLine)
	}
	return []byte(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")), nil
}

func (a *app) readTerminalPassword(fd int) ([]byte, error) {
	fmt.Fprint(a.stderr, "Password: ")
	p1, err := term.ReadPassword(fd)
	fmt.Fprintln(a.stderr)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if len(p1) == 0 {
		return p1, nil
	}
	fmt.Fprint(a.stderr, "Repeat password: ")
	p2, err := term.ReadPassword(fd)
	fmt.Fprintln(a.stderr)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if string(p1) != string(p2) {
		return nil, errors.New("the passwords do not match")
	}
	return p1, nil
}
