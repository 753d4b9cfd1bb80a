package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relaysec/relay/queue"
)

// Client calls the admin API of a running daemon over its unix socket. It
// is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socketPath. It
// does not connect until the first call.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if err := checkPathLen(socketPath); err != nil {
				return nil, &ConnectError{Socket: socketPath, Err: err}
			}
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, &ConnectError{Socket: socketPath, Err: err}
			}
			return conn, nil
		},
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
	}
	return &Client{
		socket: socketPath,
		http: &http.Client{
			Transport: tr,
			// The API never redirects; a redirect would mean a path the
			// mux cleaned, which must not silently become another call.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// SocketPath returns the socket the client connects to.
func (c *Client) SocketPath() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// ConnectError is returned when the daemon's socket cannot be reached at
// all. Its message tells the operator what to do.
type ConnectError struct {
	Socket string
	Err    error // the dial error
}

// Error says that the daemon is not running when the socket is missing or
// nothing listens on it.
func (e *ConnectError) Error() string {
	switch {
	case errors.Is(e.Err, syscall.ENOENT):
		return fmt.Sprintf("relay daemon is not running (no admin socket at %s): start it with `relay serve`", e.Socket)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("relay daemon is not running (cannot connect to %s: connection refused): start it with `relay serve`", e.Socket)
	case errors.Is(e.Err, syscall.EACCES), errors.Is(e.Err, syscall.EPERM):
		return fmt.Sprintf("cannot connect to %s: permission denied: the admin socket is mode 0600, run relayctl as the user the daemon runs as", e.Socket)
	}
	return fmt.Sprintf("cannot connect to the relay daemon at %s: %v", e.Socket, e.Err)
}

// Unwrap returns the dial error.
func (e *ConnectError) Unwrap() error { return e.Err }

// NotRunning reports whether the error means that no daemon listens on the
// socket (as opposed to one that refuses access).
func (e *ConnectError) NotRunning() bool {
	return errors.Is(e.Err, syscall.ENOENT) || errors.Is(e.Err, syscall.ECONNREFUSED)
}

// APIError is an error answer of the daemon.
type APIError struct {
	StatusCode int
	Message    string
}

// Error returns the daemon's message; server-side failures are marked as
// such.
func (e *APIError) Error() string {
	if e.StatusCode >= 500 {
		return "relay daemon error: " + e.Message
	}
	return e.Message
}

// Is makes a 404 answer match queue.ErrNotFound.
func (e *APIError) Is(target error) bool {
	return target == queue.ErrNotFound && e.StatusCode == http.StatusNotFound
}

// Status returns the daemon's version, start time and process ID.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.getJSON(ctx, "/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Stats returns the queue counters.
func (c *Client) Stats(ctx context.Context) (*queue.Stats, error) {
	var s queue.Stats
	if err := c.getJSON(ctx, "/v1/queue/stats", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// List returns messages in arrival order, at most opts.Limit (default
// DefaultListLimit) of them. The result is never nil.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]MessageSummary, error) {
	query := url.Values{}
	if opts.State != "" {
		query.Set("state", string(opts.State))
	}
	if opts.Domain != "" {
		query.Set("domain", opts.Domain)
	}
	if opts.Limit != 0 {
		query.Set("limit", strconv.Itoa(opts.Limit))
	}
	out := []MessageSummary{}
	if err := c.getJSON(ctx, "/v1/queue/messages", query, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Message returns the full queue record of one message: envelope,
// recipients and delivery attempts.
func (c *Client) Message(ctx context.Context, id string) (*queue.Message, error) {
	p, err := messagePath(id, "")
	if err != nil {
		return nil, err
	}
	var m queue.Message
	if err := c.getJSON(ctx, p, nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Body copies the raw spooled message to w and returns the number of bytes
// copied. A body cut short by the connection is an error.
func (c *Client) Body(ctx context.Context, id string, w io.Writer) (int64, error) {
	p, err := messagePath(id, "body")
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, http.MethodGet, p, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("read body of %s: %w", id, err)
	}
	return n, nil
}

// Hold stops delivery of the message's pending recipients and returns how
// many it held.
func (c *Client) Hold(ctx context.Context, id string) (int, error) {
	return c.change(ctx, id, "hold")
}

// Bounce returns the message to its sender: its recipients not yet
// delivered or failed fail, a DSN is queued, and the message is removed.
// It returns how many recipients failed.
func (c *Client) Bounce(ctx context.Context, id string) (int, error) {
	return c.change(ctx, id, "bounce")
}

// Release makes the message's held recipients due now and returns how many
// it released.
func (c *Client) Release(ctx context.Context, id string) (int, error) {
	return c.change(ctx, id, "release")
}

// Retry makes the message's queued and deferred recipients due now and
// returns how many were waiting.
func (c *Client) Retry(ctx context.Context, id string) (int, error) {
	return c.change(ctx, id, "retry")
}

func (c *Client) change(ctx context.Context, id, action string) (int, error) {
	p, err := messagePath(id, action)
	if err != nil {
		return 0, err
	}
	var r changedResponse
	if err := c.doJSON(ctx, http.MethodPost, p, nil, &r); err != nil {
		return 0, err
	}
	return r.Changed, nil
}

// Delete removes a message from the queue without notifying anyone.
func (c *Client) Delete(ctx context.Context, id string) error {
	p, err := messagePath(id, "")
	if err != nil {
		return err
	}
	var r deletedResponse
	if err := c.doJSON(ctx, http.MethodDelete, p, nil, &r); err != nil {
		return err
	}
	if !r.Deleted {
		return fmt.Errorf("delete %s: the daemon did not confirm the deletion", id)
	}
	return nil
}

// RetryDomain makes every pending recipient due now in the messages that
// have a pending recipient in domain, and returns how many messages
// changed.
func (c *Client) RetryDomain(ctx context.Context, domain string) (int, error) {
	if domain == "" {
		return 0, errors.New("retry: empty domain")
	}
	return c.retryWhere(ctx, url.Values{"domain": {domain}})
}

// RetryAll makes every pending recipient in the queue due now and returns
// how many messages changed.
func (c *Client) RetryAll(ctx context.Context) (int, error) {
	return c.retryWhere(ctx, url.Values{"all": {"1"}})
}

func (c *Client) retryWhere(ctx context.Context, query url.Values) (int, error) {
	var r retriedResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/queue/retry", query, &r); err != nil {
		return 0, err
	}
	return r.Messages, nil
}

// messagePath returns the endpoint path of one message, or of one of its
// sub-resources.
func messagePath(id, sub string) (string, error) {
	if id == "" {
		return "", errors.New("empty message ID")
	}
	p := "/v1/queue/messages/" + escapeSegment(id)
	if sub != "" {
		p += "/" + sub
	}
	return p, nil
}

// escapeSegment percent-encodes every byte of s except letters, digits, '-'
// and '_', so that no ID (such as "..") can be cleaned into another path.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (c *Client) getJSON(ctx context.Context, path string, query url.Values, out any) error {
	return c.doJSON(ctx, http.MethodGet, path, query, out)
}

// doJSON calls an endpoint and decodes its JSON answer into out.
func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, out any) error {
	resp, err := c.send(ctx, method, path, query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send calls an endpoint and returns the response if its status is 200 OK;
// the caller closes its body.
func (c *Client) send(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	u := "http://relay" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("admin API %s %s: %w", method, path, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ce *ConnectError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fmt.Errorf("admin API %s %s: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// readError turns an error answer into an *APIError.
func readError(resp *http.Response) error {
	e := &APIError{StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body errorResponse
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" && json.Unmarshal(b, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else {
		e.Message = strings.TrimSpace(resp.Status + ": " + strings.TrimSpace(string(b)))
		e.Message = strings.TrimSuffix(e.Message, ":")
	}
	return e
}
