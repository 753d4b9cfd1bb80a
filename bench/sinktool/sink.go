package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	sinkHost    = "mx.sink.test"
	maxSize     = 100 << 20 // advertised SIZE
	cmdTimeout  = 5 * time.Minute
	readBufSize = 64 << 10
	maxLatency  = 1 << 20 // latency samples kept at most
)

// sink is the SMTP receiver and its counters.
type sink struct {
	tlsConf *tls.Config // nil: no STARTTLS

	messages    atomic.Int64 // transactions completed (250 after DATA)
	tlsMessages atomic.Int64 // of which over TLS
	conns       atomic.Int64 // connections accepted
	tlsConns    atomic.Int64 // STARTTLS handshakes completed
	tlsFailed   atomic.Int64 // STARTTLS handshakes failed
	tlsResumed  atomic.Int64 // STARTTLS handshakes that resumed a session
	lastNs      atomic.Int64 // unix ns of the last completed transaction

	mu  sync.Mutex
	lat []int64 // probe latencies, ns
}

func runSink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "", "SMTP listen address (host:port on loopback)")
	status := fs.String("status", "", "HTTP status address (host:port on loopback)")
	starttls := fs.Bool("starttls", false, "offer STARTTLS (self-signed certificate for "+sinkHost+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopback("listen", *listen); err != nil {
		return err
	}
	if err := loopback("status", *status); err != nil {
		return err
	}
	s := &sink{}
	if *starttls {
		cert, err := selfSigned(sinkHost)
		if err != nil {
			return err
		}
		s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	sl, err := net.Listen("tcp", *status)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.handleStatus)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(sl) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; ln.Close() }()

	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				st := s.status()
				fmt.Printf("messages %d tls_messages %d probes %d p50_ms %.2f p99_ms %.2f\n", st.Messages, st.TLSMessages, st.Probes, st.P50, st.P99)
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Printf("accept: %v", err)
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		s.conns.Add(1)
		go s.serve(c)
	}
}

// selfSigned makes an ECDSA P-256 certificate for name, valid for a day.
func selfSigned(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

var (
	rBanner   = []byte("220 " + sinkHost + " ESMTP sinktool\r\n")
	rHelo     = []byte("250 " + sinkHost + "\r\n")
	rOK       = []byte("250 2.0.0 Ok\r\n")
	rMailOK   = []byte("250 2.1.0 Ok\r\n")
	rRcptOK   = []byte("250 2.1.5 Ok\r\n")
	rDataGo   = []byte("354 End data with <CR><LF>.<CR><LF>\r\n")
	rQueued   = []byte("250 2.0.0 Ok: queued\r\n")
	rBye      = []byte("221 2.0.0 Bye\r\n")
	rTLSGo    = []byte("220 2.0.0 Ready to start TLS\r\n")
	rVrfy     = []byte("252 2.0.0 Cannot VRFY user\r\n")
	rNested   = []byte("503 5.5.1 Error: nested MAIL command\r\n")
	rNeedMail = []byte("503 5.5.1 Error: need MAIL command\r\n")
	rNeedRcpt = []byte("503 5.5.1 Error: need RCPT command\r\n")
	rNoTLS    = []byte("502 5.5.1 STARTTLS not available\r\n")
	rTooLong  = []byte("500 5.5.2 Error: line too long\r\n")
	rUnknown  = []byte("502 5.5.2 Error: command not recognized\r\n")
)

func ehloReply(tlsOffered bool) []byte {
	var b bytes.Buffer
	b.WriteString("250-" + sinkHost + "\r\n")
	b.WriteString("250-PIPELINING\r\n")
	fmt.Fprintf(&b, "250-SIZE %d\r\n", maxSize)
	if tlsOffered {
		b.WriteString("250-STARTTLS\r\n")
	}
	b.WriteString("250-ENHANCEDSTATUSCODES\r\n")
	b.WriteString("250 8BITMIME\r\n")
	return b.Bytes()
}

var (
	rEhloPlain = ehloReply(false)
	rEhloTLS   = ehloReply(true)
)

// buffers are reused across connections: the daemons under test may open
// one connection per message
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// serve runs one SMTP connection: any number of transactions, replies
// buffered while the client has pipelined commands waiting.
func (s *sink) serve(c net.Conn) {
	defer c.Close()
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
		bw.Reset(nil)
		writers.Put(bw)
	}()
	conn := c
	isTLS := false
	inMail, rcpts := false, 0
	bw.Write(rBanner)
	for {
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
		conn.SetReadDeadline(time.Now().Add(cmdTimeout))
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			bw.Write(rTooLong)
			continue
		}
		if err != nil {
			return
		}
		switch verb(line) {
		case "EHLO":
			inMail, rcpts = false, 0
			if s.tlsConf != nil && !isTLS {
				bw.Write(rEhloTLS)
			} else {
				bw.Write(rEhloPlain)
			}
		case "HELO":
			inMail, rcpts = false, 0
			bw.Write(rHelo)
		case "MAIL":
			if inMail {
				bw.Write(rNested)
				continue
			}
			inMail, rcpts = true, 0
			bw.Write(rMailOK)
		case "RCPT":
			if !inMail {
				bw.Write(rNeedMail)
				continue
			}
			rcpts++
			bw.Write(rRcptOK)
		case "DATA":
			if rcpts == 0 {
				if inMail {
					bw.Write(rNeedRcpt)
				} else {
					bw.Write(rNeedMail)
				}
				continue
			}
			bw.Write(rDataGo)
			if bw.Flush() != nil {
				return
			}
			sent, err := readData(br, conn)
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			s.messages.Add(1)
			if isTLS {
				s.tlsMessages.Add(1)
			}
			s.lastNs.Store(now)
			if sent > 0 {
				s.mu.Lock()
				if len(s.lat) < maxLatency {
					s.lat = append(s.lat, now-sent)
				}
				s.mu.Unlock()
			}
			inMail, rcpts = false, 0
			bw.Write(rQueued)
		case "RSET":
			inMail, rcpts = false, 0
			bw.Write(rOK)
		case "NOOP":
			bw.Write(rOK)
		case "VRFY":
			bw.Write(rVrfy)
		case "QUIT":
			bw.Write(rBye)
			bw.Flush()
			return
		case "STARTTLS":
			if s.tlsConf == nil || isTLS {
				bw.Write(rNoTLS)
				continue
			}
			if br.Buffered() > 0 {
				// commands pipelined after STARTTLS (RFC 3207 forbids
				// it; acting on them would be the classic injection bug)
				return
			}
			bw.Write(rTLSGo)
			if bw.Flush() != nil {
				return
			}
			tc := tls.Server(c, s.tlsConf)
			tc.SetDeadline(time.Now().Add(30 * time.Second))
			if err := tc.Handshake(); err != nil {
				s.tlsFailed.Add(1)
				return
			}
			tc.SetDeadline(time.Time{})
			s.tlsConns.Add(1)
			if tc.ConnectionState().DidResume {
				s.tlsResumed.Add(1)
			}
			conn, isTLS = tc, true
			br.Reset(tc)
			bw.Reset(tc)
			inMail, rcpts = false, 0
		default:
			bw.Write(rUnknown)
		}
	}
}

// verb returns the command word of line, upper-cased, without allocating
// for the known commands.
func verb(line []byte) string {
	var b [8]byte
	n := 0
	for _, c := range line {
		if c == ' ' || c == '\r' || c == '\n' {
			break
		}
		if n == len(b) {
			return ""
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b[n] = c
		n++
	}
	switch string(b[:n]) { // no allocation: compared in place
	case "EHLO":
		return "EHLO"
	case "HELO":
		return "HELO"
	case "MAIL":
		return "MAIL"
	case "RCPT":
		return "RCPT"
	case "DATA":
		return "DATA"
	case "RSET":
		return "RSET"
	case "NOOP":
		return "NOOP"
	case "VRFY":
		return "VRFY"
	case "QUIT":
		return "QUIT"
	case "STARTTLS":
		return "STARTTLS"
	}
	return ""
}

var benchHeader = []byte("x-bench-sent:")

// readData reads message content up to the terminating "." line, discarding
// it (dot-unstuffing only matters for recognising the end and the header
// lines), and returns the X-Bench-Sent value of the header section, 0 if
// there is none.
func readData(br *bufio.Reader, conn net.Conn) (sent int64, err error) {
	inHeader, atStart := true, true
	for lines := 1; ; lines++ {
		// a deadline per line would be a timer update per line; the
		// deadline is minutes away, every 1024 lines is plenty
		if lines%1024 == 0 {
			conn.SetReadDeadline(time.Now().Add(cmdTimeout))
		}
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return 0, err
		}
		start := atStart
		atStart = err == nil // a full line: the next chunk starts a line
		if !start {
			continue
		}
		if line[0] == '.' {
			if atStart && (len(line) == 2 || len(line) == 3 && line[1] == '\r') {
				return sent, nil
			}
			line = line[1:] // dot-stuffed
		}
		if !inHeader {
			continue
		}
		if len(line) == 0 || line[0] == '\r' || line[0] == '\n' {
			inHeader = false
			continue
		}
		if len(line) > len(benchHeader) && bytes.EqualFold(line[:len(benchHeader)], benchHeader) {
			v := bytes.TrimSpace(line[len(benchHeader):])
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				sent = n
			}
		}
	}
}

type statusJSON struct {
	Messages      int64   `json:"messages"`
	TLSMessages   int64   `json:"tls_messages"`
	PlainMessages int64   `json:"plain_messages"`
	Probes        int     `json:"probes"`
	P50           float64 `json:"p50_ms"`
	P99           float64 `json:"p99_ms"`
	Max           float64 `json:"max_ms"`
	Connections   int64   `json:"connections"`
	TLSConns      int64   `json:"tls_connections"`
	TLSFailed     int64   `json:"tls_failed"`
	TLSResumed    int64   `json:"tls_resumed"`
	LastNs        int64   `json:"last_ns"`
}

func (s *sink) status() statusJSON {
	st := statusJSON{
		Messages:    s.messages.Load(),
		TLSMessages: s.tlsMessages.Load(),
		Connections: s.conns.Load(),
		TLSConns:    s.tlsConns.Load(),
		TLSFailed:   s.tlsFailed.Load(),
		TLSResumed:  s.tlsResumed.Load(),
		LastNs:      s.lastNs.Load(),
	}
	st.PlainMessages = st.Messages - st.TLSMessages
	s.mu.Lock()
	lat := slices.Clone(s.lat)
	s.mu.Unlock()
	st.Probes = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		st.P50 = ms(percentile(lat, 0.50))
		st.P99 = ms(percentile(lat, 0.99))
		st.Max = ms(lat[len(lat)-1])
	}
	return st
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []int64, p float64) int64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(ns int64) float64 { return math.Round(float64(ns)/1e4) / 100 }

// handleStatus serves GET /status[?wait=N&timeout=SECONDS]: with wait, it
// answers once N messages have been counted or the timeout has passed.
func (s *sink) handleStatus(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("wait"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		tmo := 60.0
		if t := r.URL.Query().Get("timeout"); t != "" {
			if tmo, err = strconv.ParseFloat(t, 64); err != nil {
				http.Error(w, "bad timeout", http.StatusBadRequest)
				return
			}
		}
		end := time.Now().Add(time.Duration(tmo * float64(time.Second)))
		for s.messages.Load() < n && time.Now().Before(end) {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(s.status())
	b = append(b, '\n')
	io.Copy(w, bytes.NewReader(b))
}
