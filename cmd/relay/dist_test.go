package main

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/relaysec/relay/relay/config"
)

// TestDistFiles checks the files of dist/: the configuration is valid and
// matches the unit, and the unit has the readiness, reload and sandboxing
// settings the README promises.
func TestDistFiles(t *testing.T) {
	cfg, err := config.Load("../../dist/relay.toml")
	if err != nil {
		t.Fatalf("dist/relay.toml: %v", err)
	}
	if cfg.DataDir != "/var/lib/relay" || cfg.Metrics.Address == "" {
		t.Errorf("dist/relay.toml: data_dir %q, metrics %q", cfg.DataDir, cfg.Metrics.Address)
	}

	f, err := os.Open("../../dist/relay.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	want := map[string]string{
		"Type":                   "notify",
		"ExecStart":              "/usr/local/bin/relay serve --config /etc/relay/relay.toml",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"User":                   "relay",
		"StateDirectory":         "relay",
		"ConfigurationDirectory": "relay",
		"ProtectSystem":          "strict",
		"ProtectHome":            "yes",
		"PrivateTmp":             "yes",
		"NoNewPrivileges":        "yes",
		"AmbientCapabilities":    "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":  "CAP_NET_BIND_SERVICE",
	}
	for k, v := range want {
		if got := unit[k]; len(got) != 1 || got[0] != v {
			t.Errorf("relay.service: %s=%v, want %s", k, got, v)
		}
	}
}
