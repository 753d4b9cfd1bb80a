package deliver

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/dsn"
)

// notifies reports whether a recipient asked for DSNs of the given kind
// (RFC 3461 §4.1). Without NOTIFY the relay reports failures and delays.
func notifies(r queue.Recipient, kind string) bool {
	if len(r.Notify) == 0 {
		return kind == "FAILURE" || kind == "DELAY"
	}
	return slices.Contains(r.Notify, kind)
}

// delayWarningDue reports whether this round should send the one delay
// warning of a message (checklist DSN05).
func (e *Engine) delayWarningDue(m *queue.Message, outs []outcome, now time.Time) bool {
	if e.opts.DelayWarning <= 0 || m.DelayWarned || m.From == "" || now.Sub(m.ReceivedAt) < e.opts.DelayWarning {
		return false
	}
	for _, o := range outs {
		if o.state == queue.StateDeferred && notifies(m.Recipients[o.rcpt], "DELAY") {
			return true
		}
	}
	return false
}

// queueDSNs queues the delivery status notifications this round calls
// for: one failure report grouping every failed recipient (DSN01), one
// delay warning (DSN05), and a "relayed" report for NOTIFY=SUCCESS
// recipients handed to a server that does not support DSN (RFC 3461
// §5.2.2). Nothing is sent for a null sender (DSN02). It marks the
// outcomes that need a DSN.
// Bounce returns a message to its sender at an administrator's request
// (`relayctl queue bounce`): every recipient not yet delivered or failed
// fails with status 5.0.0, the sender gets a delivery status notification
// as for any failure (RFC 3461 NOTIFY applies), and the message leaves
// the queue. It returns how many recipients it failed; a message being
// delivered at the moment gives queue.ErrLeased.
func (e *Engine) Bounce(id string) (int, error) {
	l, err := e.q.LeaseMessage(id)
	if err != nil {
		return 0, err
	}
	defer e.q.Unlease(id)
	if len(l.Rcpts) == 0 {
		return 0, nil
	}
	now := e.opts.Now()
	outs := make([]outcome, len(l.Rcpts))
	for i, r := range l.Rcpts {
		outs[i] = outcome{rcpt: r, state: queue.StateFailed, status: "5.0.0", lastAttempt: now,
			reason: "returned to the sender by the relay's administrator"}
	}
	// The DSN first, then the record, as after a delivery attempt.
	if err := e.queueDSNs(l.Message, outs, false, now); err != nil {
		return 0, fmt.Errorf("bounce %s: queue the delivery status notification: %w", id, err)
	}
	if err := e.recordOutcomes(l.Message, outs, nil, false); err != nil {
		return 0, fmt.Errorf("bounce %s: %w", id, err)
	}
	e.log.Info("message bounced by the administrator", "queue_id", id, "recipients", len(outs))
	return len(outs), nil
}

func (e *Engine) queueDSNs(m *queue.Message, outs []outcome, delayWarn bool, now time.Time) error {
	if m.From == "" {
		return nil
	}
	var failed, delayed, relayed []dsn.Recipient
	for i := range outs {
		o := &outs[i]
		r := m.Recipients[o.rcpt]
		rec := dsn.Recipient{
			Addr: r.Addr, ORcpt: r.ORcpt, Status: o.status, RemoteMTA: trimDot(o.remoteMTA),
			Diagnostic: o.reply, LastAttempt: o.lastAttempt, Reason: o.reason,
		}
		switch {
		case o.state == queue.StateFailed && notifies(r, "FAILURE"):
			rec.Action = dsn.ActionFailed
			if o.expired {
				rec.Reason = fmt.Sprintf("gave up after %s in the queue; last error: %s", e.opts.QueueLifetime, o.errorText())
			}
			failed = append(failed, rec)
			o.notifyNeeded = true
		case o.state == queue.StateDelivered && notifies(r, "SUCCESS") && !o.remoteDSN:
			rec.Action, rec.Status = dsn.ActionRelayed, "2.0.0"
			rec.Reason = "delivered to " + trimDot(o.remoteMTA) + ", which does not send delivery notifications itself"
			relayed = append(relayed, rec)
			o.notifyNeeded = true
		case o.state == queue.StateDeferred && delayWarn && notifies(r, "DELAY"):
			rec.Action = dsn.ActionDelayed
			rec.WillRetryUntil = m.ReceivedAt.Add(e.opts.QueueLifetime)
			delayed = append(delayed, rec)
		}
	}
	for _, group := range [][]dsn.Recipient{failed, delayed, relayed} {
		if len(group) == 0 {
			continue
		}
		if err := e.queueDSN(m, group, now); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) queueDSN(m *queue.Message, rcpts []dsn.Recipient, now time.Time) error {
	body, err := e.q.Body(m.ID)
	if err != nil {
		return fmt.Errorf("open original message: %w", err)
	}
	defer body.Close()
	data, err := dsn.Build(dsn.Message{
		ReportingMTA: e.opts.Hostname,
		To:           m.From,
		QueueID:      m.ID,
		EnvID:        m.DSNEnvID,
		ArrivalDate:  m.ReceivedAt,
		Ret:          m.DSNRet,
		Original:     body,
		SMTPUTF8:     m.SMTPUTF8,
		Recipients:   rcpts,
		Date:         now,
	})
	if err != nil {
		return fmt.Errorf("build DSN: %w", err)
	}
	bounce := &queue.Message{
		From:       "", // RFC 3461 §6.2 / RFC 5321 §4.5.5: DSNs use the null reverse path
		Bounce:     true,
		SMTPUTF8:   m.SMTPUTF8,
		ReceivedAt: now,
		Recipients: []queue.Recipient{{Addr: m.From, Notify: []string{"NEVER"}}},
	}
	if e.holdDSN.Load() {
		bounce.Recipients[0].State = queue.StateHeld
	}
	if !isASCII(data) {
		bounce.Body = "8BITMIME"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.q.Enqueue(ctx, bounce, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("queue DSN: %w", err)
	}
	e.log.Info("queued delivery status notification", "queue_id", m.ID, "dsn_id", bounce.ID,
		"action", rcpts[0].Action, "rcpts", len(rcpts), "to", m.From)
	return nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}
