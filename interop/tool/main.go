// Command interop-tool is the Go half of the interop suite (interop/run.sh):
//
//	interop-tool gen -dir DIR -net 127.77.0
//	    writes the test PKI, zone files, receiving smtpd services, MTA-STS
//	    policies and the scenario list for run.sh;
//	interop-tool corrupt -file ZONE.signed -owner NAME -type TYPE
//	    breaks the RRSIGs over one RRset of a signed zone file (bogus data);
//	interop-tool score -dir DIR ...
//	    waits for the relay and the reference Postfix to settle, scores the
//	    relay against the expected outcomes and prints the table.
//
// The scenarios live in scenarios.go.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var err error
	switch cmd {
	case "gen":
		dir := fs.String("dir", "", "output directory")
		net := fs.String("net", "127.77.0", "first three octets of the suite's loopback /24")
		fs.Parse(args)
		if *dir == "" {
			usage()
		}
		err = gen(*dir, *net)
	case "corrupt":
		file := fs.String("file", "", "signed zone file, changed in place")
		owner := fs.String("owner", "", "owner name of the RRset")
		typ := fs.String("type", "", "type of the RRset")
		fs.Parse(args)
		err = corrupt(*file, *owner, *typ)
	case "score":
		var o scoreOptions
		fs.StringVar(&o.dir, "dir", "", "run directory")
		fs.StringVar(&o.relayctl, "relayctl", "", "relayctl binary")
		fs.StringVar(&o.relayConfig, "relay-config", "", "relay.toml of the relay under test")
		fs.StringVar(&o.maildir, "maildir", "", "Maildir of the receiving Postfix")
		fs.StringVar(&o.postfixLog, "postfix-log", "", "maillog of the reference Postfix (empty: no reference column)")
		fs.StringVar(&o.postfixVer, "postfix-version", "", "version of the reference Postfix, for the table header")
		fs.DurationVar(&o.wait, "wait", 0, "how long to wait for every message to settle")
		fs.Parse(args)
		var failed int
		failed, err = score(o, os.Stdout)
		if err == nil && failed > 0 {
			os.Exit(1)
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop-tool %s: %v\n", cmd, err)
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: interop-tool gen|corrupt|score [flags]")
	os.Exit(2)
}

// corrupt changes one base64 character in the middle of the signature of
// every RRSIG covering owner/typ, so that a validating resolver finds the
// RRset bogus (RFC 4035 §5.3) and answers SERVFAIL.
func corrupt(file, owner, typ string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	owner = strings.ToLower(strings.TrimSuffix(owner, ".") + ".")
	lines := strings.Split(string(data), "\n")
	n := 0
	for i, line := range lines {
		f := strings.Fields(line)
		// owner ttl IN RRSIG covered alg labels origttl exp inc tag signer sig...
		if len(f) < 13 || strings.ToLower(f[0]) != owner || f[3] != "RRSIG" || !strings.EqualFold(f[4], typ) {
			continue
		}
		sig := []byte(f[len(f)-1])
		j := len(sig) / 2
		if sig[j] == 'A' {
			sig[j] = 'B'
		} else {
			sig[j] = 'A'
		}
		f[len(f)-1] = string(sig)
		lines[i] = strings.Join(f, "\t")
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no RRSIG over %s %s", file, owner, typ)
	}
	return os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644)
}
