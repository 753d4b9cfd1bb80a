// Command sinktool is the receiving and probing side of the throughput
// benchmark (bench/throughput/run.sh).
//
//	sinktool sink --listen ADDR [--starttls] --status ADDR2
//	sinktool probe --to ADDR --rate R --from a@b --rcpt user@sink.test --size BYTES [--duration D] [--until-file F]
//
// The sink is an SMTP receiver that accepts and discards every message, with
// optional STARTTLS (a self-signed certificate made at start-up), counts the
// messages it accepted, over TLS and in plaintext, and, for messages that
// carry an "X-Bench-Sent: <unix nanoseconds>" header (the probe's), records
// the latency from that time to the end of DATA. GET /status on the status
// address reports the counts and the latency percentiles as JSON.
//
// The probe submits such timestamped messages to the daemon under test at a
// fixed low rate, one SMTP session at a time, until SIGTERM (or --duration,
// or --until-file appears), then prints how many were accepted.
//
// Both only use loopback addresses: the benchmark runs on 127.0.0.0/8.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "sink":
		err = runSink(os.Args[2:])
	case "probe":
		err = runProbe(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sinktool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  sinktool sink --listen ADDR [--starttls] --status ADDR2
  sinktool probe --to ADDR --rate R --from a@b --rcpt user@sink.test --size BYTES [--duration D] [--until-file F]
`)
	os.Exit(2)
}

// loopback checks that addr is host:port with a literal 127.0.0.0/8 (or ::1)
// host: the benchmark must not touch anything but loopback.
func loopback(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %v", flag, addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--%s %q: not a loopback address (127.0.0.0/8)", flag, addr)
	}
	return nil
}
