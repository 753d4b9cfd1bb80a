package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
)

type scoreOptions struct {
	dir         string
	relayctl    string
	relayConfig string
	maildir     string
	postfixLog  string
	postfixVer  string
	wait        time.Duration
}

// copyInfo is one message found in the receivers' Maildir.
type copyInfo struct {
	by  string // the receiving smtpd's myhostname: the MX host
	tls bool
}

// mailbox is what the receivers delivered, by X-Interop-Id ("relay/ID"
// or "postfix/ID").
type mailbox struct {
	copies map[string][]copyInfo
	dsns   map[string]int // DSNs to the sender that quote the message
}

var (
	reInteropID = regexp.MustCompile(`(?m)^X-Interop-Id:\s*(\S+)`)
	reBy        = regexp.MustCompile(`\bby\s+(\S+)`)
)

func readMailbox(dir string) (*mailbox, error) {
	mb := &mailbox{copies: map[string][]copyInfo{}, dsns: map[string]int{}}
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return nil, err
			}
			m, err := mail.ReadMessage(bytes.NewReader(data))
			if err != nil {
				continue
			}
			if strings.Contains(strings.ToLower(m.Header.Get("Content-Type")), "multipart/report") {
				body, _ := io.ReadAll(m.Body)
				for _, x := range reInteropID.FindAllSubmatch(body, -1) {
					mb.dsns[string(x[1])]++
				}
				continue
			}
			id := m.Header.Get("X-Interop-Id")
			if id == "" {
				continue
			}
			var c copyInfo
			if rcv := m.Header["Received"]; len(rcv) > 0 {
				top := strings.Join(strings.Fields(rcv[0]), " ")
				if x := reBy.FindStringSubmatch(top); x != nil {
					c.by = x[1]
				}
				c.tls = strings.Contains(top, "using TLS") || strings.Contains(top, "with ESMTPS")
			}
			mb.copies[id] = append(mb.copies[id], c)
		}
	}
	return mb, nil
}

// queued is a message in the relay's queue (relayctl queue list --json).
type queued struct {
	ID         string `json:"id"`
	Recipients []struct {
		Addr      string `json:"addr"`
		State     string `json:"state"`
		Attempts  int    `json:"attempts"`
		LastError string `json:"last_error"`
	} `json:"recipients"`
}

func relayctl(o scoreOptions, args ...string) ([]byte, error) {
	cmd := exec.Command(o.relayctl, append([]string{"--config", o.relayConfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("relayctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func relayQueue(o scoreOptions) (map[string]queued, error) {
	out, err := relayctl(o, "queue", "list", "--json")
	if err != nil {
		return nil, err
	}
	var list []queued
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("relayctl queue list: %v", err)
	}
	q := map[string]queued{}
	for _, m := range list {
		q[m.ID] = m
	}
	return q, nil
}

// relayPolicy is the policy relayctl policy lookup names for host.
func relayPolicy(o scoreOptions, domain, host string) string {
	out, err := relayctl(o, "policy", "lookup", domain, "--json")
	if err != nil {
		return "?"
	}
	var ex struct {
		Hosts []struct {
			Host   string `json:"host"`
			Policy string `json:"policy"`
		} `json:"hosts"`
	}
	if json.Unmarshal(out, &ex) != nil {
		return "?"
	}
	for _, h := range ex.Hosts {
		if strings.TrimSuffix(h.Host, ".") == host {
			return h.Policy
		}
	}
	return "?"
}

// pfStatus is the first delivery status Postfix logged for a queue ID.
type pfStatus struct {
	status, relay, text, tls string
}

var (
	rePFStatus = regexp.MustCompile(`/(\w+)\[(\d+)\]: ([0-9A-Za-z]+): to=<[^>]*>,(?: orig_to=<[^>]*>,)? relay=([^,]+), .*status=(\w+) \((.*)\)$`)
	rePFTLS    = regexp.MustCompile(`/smtp\[(\d+)\]: (Verified|Trusted|Untrusted|Anonymous) TLS connection established to `)
)

func readPostfixLog(file string) (map[string]pfStatus, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := map[string]pfStatus{}
	tlsByPID := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if x := rePFTLS.FindStringSubmatch(line); x != nil {
			tlsByPID[x[1]] = x[2]
			continue
		}
		x := rePFStatus.FindStringSubmatch(line)
		if x == nil {
			continue
		}
		if _, seen := st[x[3]]; seen {
			continue
		}
		s := pfStatus{status: x[5], relay: x[4], text: x[6]}
		if x[1] == "smtp" {
			s.tls = tlsByPID[x[2]]
			delete(tlsByPID, x[2])
		}
		st[x[3]] = s
	}
	return st, sc.Err()
}

// readSends reads sends.tsv: "side id queue-id" per line.
func readSends(file string) (map[string]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	ids := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] != "-" {
			ids[f[0]+"/"+f[1]] = f[2]
		}
	}
	return ids, nil
}

// observation is what happened to one message on one side.
type observation struct {
	sent     bool // the sender accepted it (we know its queue ID)
	inQueue  bool // relay: still queued
	states   []string
	attempts int
	lastErr  string
	pf       *pfStatus // postfix
	copies   []copyInfo
	dsn      int
	policy   string // relay: policy lookup for the receiving host
}

func short(host, domain string) string {
	if strings.HasSuffix(host, "."+domain) {
		return strings.TrimSuffix(host, "."+domain)
	}
	return host
}

func (e Expect) String(domain string) string {
	switch e.Outcome {
	case "delivered":
		s := "delivered " + short(e.Via, domain)
		if e.TLS {
			s += " TLS"
		} else {
			s += " cleartext"
		}
		return s + " " + e.Policy
	case "bounced":
		return "bounced + DSN"
	}
	return e.Outcome
}

func describeCopies(cs []copyInfo, domain string) string {
	var parts []string
	for _, c := range cs {
		s := "delivered " + short(c.by, domain)
		if c.tls {
			s += " TLS"
		} else {
			s += " cleartext"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " + ")
}

func (ob *observation) relayString(domain string) string {
	switch {
	case !ob.sent:
		return "not accepted by the relay"
	case len(ob.copies) > 0:
		s := describeCopies(ob.copies, domain)
		if ob.policy != "" {
			s += " " + ob.policy
		}
		if ob.inQueue {
			s += " (and still queued)"
		}
		return s
	case ob.inQueue:
		st := strings.Join(uniq(ob.states), ",")
		if ob.attempts == 0 {
			return st + " (no attempt yet)"
		}
		return st
	case ob.dsn > 0:
		return "bounced + DSN"
	}
	return "gone from the queue, not delivered, no DSN"
}

func (ob *observation) postfixString(domain string) string {
	switch {
	case !ob.sent:
		return "not accepted by Postfix"
	case ob.pf == nil:
		return "no status logged"
	}
	switch ob.pf.status {
	case "sent":
		s := describeCopies(ob.copies, domain)
		if s == "" {
			s = "sent, not in Maildir"
		}
		if ob.pf.tls != "" {
			s += " (" + ob.pf.tls + ")"
		}
		return s
	case "bounced":
		if ob.dsn > 0 {
			return "bounced + DSN"
		}
		return "bounced"
	}
	return ob.pf.status
}

func uniq(s []string) []string {
	var out []string
	for _, x := range s {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// judge scores the relay's observation against the expectation; it
// returns "" when it passes, else why not.
func judge(s *Scenario, ob *observation) string {
	e := s.Expect
	if !ob.sent {
		return "the relay did not accept the message"
	}
	switch e.Outcome {
	case "delivered":
		switch {
		case len(ob.copies) == 0:
			return "not delivered"
		case len(ob.copies) > 1:
			return fmt.Sprintf("delivered %d times", len(ob.copies))
		case ob.copies[0].by != e.Via:
			return "delivered via " + ob.copies[0].by + ", want " + e.Via
		case ob.copies[0].tls != e.TLS:
			return fmt.Sprintf("TLS = %v, want %v", ob.copies[0].tls, e.TLS)
		case ob.inQueue:
			return "delivered but still in the queue"
		case e.Policy != "" && ob.policy != e.Policy:
			return "policy " + ob.policy + ", want " + e.Policy
		}
	case "deferred":
		switch {
		case len(ob.copies) > 0:
			return "delivered (" + describeCopies(ob.copies, s.Domain()) + "), want deferred"
		case !ob.inQueue:
			return "not in the queue any more, want deferred"
		case ob.attempts == 0:
			return "no delivery attempt was made"
		case ob.dsn > 0:
			return "a DSN was sent"
		}
		for _, st := range ob.states {
			if st != "deferred" {
				return "recipient state " + st + ", want deferred"
			}
		}
	case "bounced":
		switch {
		case len(ob.copies) > 0:
			return "delivered, want bounced"
		case ob.inQueue:
			return "still queued (" + strings.Join(ob.states, ",") + "), want bounced"
		case ob.dsn == 0:
			return "no DSN reached the sender"
		}
	}
	return ""
}

// settled reports whether an observation can no longer change before the
// next retry (an hour away).
func (ob *observation) relaySettled() bool {
	switch {
	case !ob.sent:
		return true
	case ob.inQueue:
		if ob.attempts == 0 {
			return false
		}
		for _, st := range ob.states {
			if st == "queued" {
				return false
			}
		}
		return true
	}
	return len(ob.copies) > 0 || ob.dsn > 0
}

func (ob *observation) postfixSettled() bool {
	switch {
	case !ob.sent:
		return true
	case ob.pf == nil:
		return false
	case ob.pf.status == "sent":
		return len(ob.copies) > 0
	case ob.pf.status == "bounced":
		return ob.dsn > 0
	}
	return true
}

func observe(o scoreOptions, sends map[string]string) (relay, pf map[string]*observation, settled bool, err error) {
	q, err := relayQueue(o)
	if err != nil {
		return nil, nil, false, err
	}
	mb, err := readMailbox(o.maildir)
	if err != nil {
		return nil, nil, false, err
	}
	var pfLog map[string]pfStatus
	if o.postfixLog != "" {
		if pfLog, err = readPostfixLog(o.postfixLog); err != nil && !os.IsNotExist(err) {
			return nil, nil, false, err
		}
	}
	relay, pf = map[string]*observation{}, map[string]*observation{}
	settled = true
	for _, s := range scenarios {
		ob := &observation{}
		if id, ok := sends["relay/"+s.ID]; ok {
			ob.sent = true
			if m, ok := q[id]; ok {
				ob.inQueue = true
				for _, r := range m.Recipients {
					ob.states = append(ob.states, r.State)
					ob.attempts = max(ob.attempts, r.Attempts)
					if r.LastError != "" {
						ob.lastErr = r.LastError
					}
				}
			}
		}
		ob.copies = mb.copies["relay/"+s.ID]
		ob.dsn = mb.dsns["relay/"+s.ID]
		relay[s.ID] = ob
		settled = settled && ob.relaySettled()

		if o.postfixLog == "" {
			continue
		}
		pob := &observation{}
		if id, ok := sends["postfix/"+s.ID]; ok {
			pob.sent = true
			if st, ok := pfLog[id]; ok {
				pob.pf = &st
			}
		}
		pob.copies = mb.copies["postfix/"+s.ID]
		pob.dsn = mb.dsns["postfix/"+s.ID]
		pf[s.ID] = pob
		settled = settled && pob.postfixSettled()
	}
	return relay, pf, settled, nil
}

func score(o scoreOptions, w io.Writer) (failed int, err error) {
	sends, err := readSends(filepath.Join(o.dir, "sends.tsv"))
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(o.wait)
	var relay, pf map[string]*observation
	for {
		var settled bool
		relay, pf, settled, err = observe(o, sends)
		if err != nil {
			return 0, err
		}
		if settled || time.Now().After(deadline) {
			if !settled {
				fmt.Fprintf(w, "(gave up waiting after %s: some messages had not settled)\n", o.wait)
			}
			break
		}
		time.Sleep(time.Second)
	}
	// The policy the relay applies to the host that received the message.
	for _, s := range scenarios {
		ob := relay[s.ID]
		if s.Expect.Outcome == "delivered" && len(ob.copies) == 1 {
			ob.policy = relayPolicy(o, s.Domain(), ob.copies[0].by)
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "#\tSCENARIO\tCHECKLIST\tEXPECTED (relay)\tRELAY\tSCORE"
	if o.postfixLog != "" {
		header += "\tPOSTFIX " + o.postfixVer + " dane (reference, not scored)"
	}
	fmt.Fprintln(tw, header)
	var notes []string
	passed := 0
	for i, s := range scenarios {
		d := s.Domain()
		ob := relay[s.ID]
		verdict := judge(s, ob)
		res := "pass"
		if verdict != "" {
			res = "FAIL"
			failed++
			notes = append(notes, fmt.Sprintf("%s: FAIL: %s", s.ID, verdict))
		} else {
			passed++
		}
		line := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s", i+1, s.ID, s.Checklist, s.Expect.String(d), ob.relayString(d), res)
		if o.postfixLog != "" {
			pob := pf[s.ID]
			ps := pob.postfixString(d)
			if s.PostfixNA {
				ps = "N/A (no MTA-STS): " + ps
			} else if !samePostfix(s, pob) {
				ps += "  [differs]"
			}
			line += "\t" + ps
			if pob.pf != nil && pob.pf.status != "sent" {
				notes = append(notes, fmt.Sprintf("%s: postfix %s: %s", s.ID, pob.pf.status, pob.pf.text))
			}
		}
		fmt.Fprintln(tw, line)
		if ob.lastErr != "" {
			notes = append(notes, fmt.Sprintf("%s: relay: %s", s.ID, ob.lastErr))
		}
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nWhy (last error per deferred message, failures):")
		for _, n := range notes {
			fmt.Fprintln(w, "  "+truncate(n, 220))
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed\n", passed, failed)
	return failed, nil
}

// samePostfix reports whether Postfix's outcome matches the relay's
// expected outcome in kind, MX host and TLS.
func samePostfix(s *Scenario, ob *observation) bool {
	if ob.pf == nil {
		return false
	}
	switch s.Expect.Outcome {
	case "delivered":
		return ob.pf.status == "sent" && len(ob.copies) == 1 && ob.copies[0].by == s.Expect.Via && ob.copies[0].tls == s.Expect.TLS
	case "deferred":
		return ob.pf.status == "deferred" && len(ob.copies) == 0
	case "bounced":
		return ob.pf.status == "bounced"
	}
	return false
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
