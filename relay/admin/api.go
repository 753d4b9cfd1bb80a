// Package admin is the relay daemon's administration API and its client.
//
// bbolt allows one writing process, so while the daemon runs nothing else
// may open the queue database. The daemon therefore serves this API, JSON
// over HTTP on a unix socket of mode 0600, and relayctl talks to it through
// Client. The endpoints are:
//
//	GET    /v1/status                       Status
//	GET    /v1/queue/stats                  queue.Stats
//	GET    /v1/queue/messages               []MessageSummary (?state=&domain=&limit=)
//	GET    /v1/queue/messages/{id}          queue.Message
//	GET    /v1/queue/messages/{id}/body     the raw message (message/rfc822)
//	POST   /v1/queue/messages/{id}/hold     {"changed": n}
//	POST   /v1/queue/messages/{id}/release  {"changed": n}
//	POST   /v1/queue/messages/{id}/retry    {"changed": n}
//	DELETE /v1/queue/messages/{id}          {"deleted": true}
//	POST   /v1/queue/retry                  {"messages": n} (?domain=D or ?all=1; with &progress=1
//	                                        JSON lines {"done","total"}, then {"messages": n})
//	POST   /v1/reload                       ReloadResult; 422 with {"error", "problems"} when refused
//
// Errors are {"error": "..."} with status 404 for an unknown message ID (or
// one that is not a message ID at all), 400 for bad parameters and 500 when
// the queue fails.
package admin

import (
	"time"

	"github.com/relaysec/relay/queue"
)

// List limits: a list request without limit returns at most DefaultListLimit
// messages, and no request may ask for more than MaxListLimit.
const (
	DefaultListLimit = 1000
	MaxListLimit     = 100000
)

// Status describes the running daemon.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Uptime is the time since Started in Go duration syntax ("1h2m3s").
	Uptime string `json:"uptime"`
	PID    int    `json:"pid"`
}

// MessageSummary is one message in a queue listing.
type MessageSummary struct {
	ID         string             `json:"id"`
	From       string             `json:"from"` // empty for the null reverse path
	ReceivedAt time.Time          `json:"received_at"`
	Size       int64              `json:"size"`
	Recipients []RecipientSummary `json:"recipients"`
}

// RecipientSummary is the delivery state of one recipient in a listing.
type RecipientSummary struct {
	Addr        string      `json:"addr"`
	State       queue.State `json:"state"`
	NextAttempt time.Time   `json:"next_attempt,omitzero"`
	Attempts    int         `json:"attempts"`
	LastError   string      `json:"last_error,omitempty"`
}

// ListOptions selects messages for Client.List. Empty fields match
// everything; a zero Limit means DefaultListLimit.
type ListOptions struct {
	State  queue.State // at least one recipient in this state
	Domain string      // at least one recipient in this domain
	Limit  int
}

// Summarize returns the listing entry of m.
func Summarize(m *queue.Message) MessageSummary {
	s := MessageSummary{
		ID:         m.ID,
		From:       m.From,
		ReceivedAt: m.ReceivedAt,
		Size:       m.Size,
		Recipients: make([]RecipientSummary, len(m.Recipients)),
	}
	for i, r := range m.Recipients {
		s.Recipients[i] = RecipientSummary{
			Addr:        r.Addr,
			State:       r.State,
			NextAttempt: r.NextAttempt,
			Attempts:    r.Attempts,
			LastError:   r.LastError,
		}
	}
	return s
}

// Response bodies of the mutating endpoints and of errors.
type (
	changedResponse struct {
		Changed int `json:"changed"`
	}
	deletedResponse struct {
		Deleted bool `json:"deleted"`
	}
	retriedResponse struct {
		Messages int `json:"messages"`
	}
	errorResponse struct {
		Error string `json:"error"`
	}
)

// validState reports whether s names a recipient state.
func validState(s queue.State) bool {
	switch s {
	case queue.StateQueued, queue.StateDeferred, queue.StateHeld, queue.StateDelivered, queue.StateFailed:
		return true
	}
	return false
}
