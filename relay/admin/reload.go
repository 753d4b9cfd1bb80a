package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/relaysec/relay/relay/config"
)

// ReloadFunc reloads the daemon's configuration file (the daemon's
// reloader). Its error says why a configuration was refused; a
// *config.Errors lists every problem.
type ReloadFunc func(ctx context.Context) (*ReloadResult, error)

// ReloadResult is the answer of POST /v1/reload.
type ReloadResult struct {
	// Config is the file that was read again.
	Config string `json:"config"`
	// Changed are the settings that changed and are now in force, as key
	// paths such as "user", "route" or "inbound.mta_sts".
	Changed []string `json:"changed"`
	// RestartNeeded are the settings that changed in the file but keep
	// their old values until the daemon restarts, such as
	// "listener[0].address" or "delivery.workers".
	RestartNeeded []string `json:"restart_needed"`
	// Warnings are the non-fatal problems of the file.
	Warnings []string `json:"warnings,omitempty"`
}

// reloadError is the body of a refused reload (422): Error says why in
// full, Problems lists the problems of the file one by one.
type reloadError struct {
	Error    string   `json:"error"`
	Problems []string `json:"problems"`
}

func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	if s.opts.Reload == nil {
		writeError(w, http.StatusNotFound, "this daemon cannot reload its configuration")
		return
	}
	res, err := s.opts.Reload(r.Context())
	if err != nil {
		body := reloadError{}
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			for _, e := range cerrs.List {
				body.Problems = append(body.Problems, e.Error())
			}
			body.Error = fmt.Sprintf("configuration not reloaded, the running one stays in force: the file has %d problem(s):\n%s",
				len(cerrs.List), strings.Join(body.Problems, "\n"))
		} else {
			body.Problems = []string{err.Error()}
			body.Error = "configuration not reloaded, the running one stays in force: " + err.Error()
		}
		writeJSON(w, http.StatusUnprocessableEntity, body)
		return
	}
	writeJSON(w, http.StatusOK, res) // the reloader logged what it did
}

// Reload asks the daemon to read its configuration file again and apply
// it. A refused configuration is an *APIError whose message lists every
// problem, one per line; the daemon keeps its running configuration then.
func (c *Client) Reload(ctx context.Context) (*ReloadResult, error) {
	var res ReloadResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/reload", nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
