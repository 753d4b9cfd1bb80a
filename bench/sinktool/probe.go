package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func runProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	to := fs.String("to", "", "SMTP address of the daemon under test (host:port on loopback)")
	rate := fs.Float64("rate", 20, "messages per second")
	from := fs.String("from", "probe@bench.test", "envelope sender")
	rcpt := fs.String("rcpt", "user@sink.test", "envelope recipient")
	size := fs.Int("size", 1024, "body size in bytes")
	duration := fs.Duration("duration", 0, "stop after this long (0: until SIGTERM)")
	untilFile := fs.String("until-file", "", "stop once this file exists")
	helo := fs.String("helo", "probe.bench.test", "EHLO name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopback("to", *to); err != nil {
		return err
	}
	if *rate <= 0 {
		return errors.New("--rate must be positive")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if *untilFile != "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if _, err := os.Stat(*untilFile); err == nil {
						cancel()
						return
					}
				}
			}
		}()
	}

	p := &prober{to: *to, helo: *helo, from: *from, rcpt: *rcpt, body: padBody(*size)}
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer tick.Stop()
	var sent, failed int
	var lastErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		if err := p.send(ctx, sent+failed); err != nil {
			failed++
			lastErr = err
			p.close()
			continue
		}
		sent++
	}
	p.quit()
	fmt.Printf("sent %d failed %d\n", sent, failed)
	if lastErr != nil {
		fmt.Fprintf(os.Stderr, "sinktool probe: last error: %v\n", lastErr)
	}
	return nil
}

// padBody returns CRLF lines of 'x' (76 characters and CRLF) totalling size
// bytes, at least one line.
func padBody(size int) []byte {
	var b []byte
	line := strings.Repeat("x", 76) + "\r\n"
	for len(b)+len(line) <= size {
		b = append(b, line...)
	}
	if rest := size - len(b); rest > 2 || len(b) == 0 {
		b = append(b, strings.Repeat("x", max(1, rest-2))+"\r\n"...)
	}
	return b
}

// prober holds one SMTP session to the daemon under test, reconnecting
// after an error.
type prober struct {
	to, helo, from, rcpt string
	body                 []byte

	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func (p *prober) close() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

func (p *prober) quit() {
	if p.c == nil {
		return
	}
	p.c.SetDeadline(time.Now().Add(2 * time.Second))
	_ = p.cmd(221, "QUIT")
	p.close()
}

// reply reads one (possibly multi-line) reply and checks its code.
func (p *prober) reply(want int) error {
	for {
		line, err := p.br.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 {
			return fmt.Errorf("short reply %q", line)
		}
		if line[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code != want {
			return fmt.Errorf("want %d, got %q", want, strings.TrimSpace(line))
		}
		return nil
	}
}

func (p *prober) cmd(want int, format string, a ...any) error {
	fmt.Fprintf(p.bw, format+"\r\n", a...)
	if err := p.bw.Flush(); err != nil {
		return err
	}
	return p.reply(want)
}

func (p *prober) dial() error {
	c, err := net.DialTimeout("tcp", p.to, 10*time.Second)
	if err != nil {
		return err
	}
	p.c, p.br, p.bw = c, bufio.NewReader(c), bufio.NewWriterSize(c, 32<<10)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := p.reply(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := p.cmd(250, "EHLO %s", p.helo); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	return nil
}

// send submits one probe message, timestamped when its transaction starts
// (before MAIL FROM, or before connecting when there is no session).
func (p *prober) send(ctx context.Context, seq int) error {
	t0 := time.Now()
	if p.c == nil {
		if err := p.dial(); err != nil {
			p.close()
			return err
		}
	}
	c := p.c
	c.SetDeadline(time.Now().Add(60 * time.Second))
	// on SIGTERM, let the transaction under way finish, briefly
	defer context.AfterFunc(ctx, func() { c.SetDeadline(time.Now().Add(5 * time.Second)) })()
	if err := p.cmd(250, "MAIL FROM:<%s>", p.from); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := p.cmd(250, "RCPT TO:<%s>", p.rcpt); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	if err := p.cmd(354, "DATA"); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	ns := t0.UnixNano()
	fmt.Fprintf(p.bw, "From: <%s>\r\nTo: <%s>\r\nSubject: bench probe %d\r\nDate: %s\r\nMessage-ID: <%d.%d@%s>\r\nX-Bench-Sent: %d\r\n\r\n",
		p.from, p.rcpt, seq, t0.Format(time.RFC1123Z), ns, seq, p.helo, ns)
	p.bw.Write(p.body) // no line starts with '.'
	if err := p.cmd(250, "."); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return nil
}
