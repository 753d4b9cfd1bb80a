package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Example texts of the commands, by command path, kept in
// one place so that `relayctl CMD --help` of every command shows how it is
// used. A command that sets Example itself keeps its own;
// TestEveryCommandHasExamples makes sure no command is left without.
var examples = map[string]string{
	"relayctl": `# what is waiting, and why
relayctl queue inspect
relayctl queue list --state deferred

# a daemon whose configuration is not ./relay.toml or /etc/relay/relay.toml
relayctl --config /srv/relay/relay.toml queue inspect

# after editing the configuration file
relayctl reload

# shell completion (bash; see relayctl completion --help for the others)
source <(relayctl completion bash)`,

	"relayctl queue": `relayctl queue inspect
relayctl queue list --domain example.com
relayctl queue show 0dbq4t1c8hpmg2sa
relayctl queue retry --all`,
	"relayctl queue inspect": `relayctl queue inspect
relayctl --json queue inspect | jq .recipients`,
	"relayctl queue list": `relayctl queue list
relayctl queue list --state deferred --domain example.com
relayctl queue list --state held --limit 5000
relayctl --json queue list --state failed | jq -r '.[].id'`,
	"relayctl queue show": `relayctl queue show 0dbq4t1c8hpmg2sa
relayctl queue show --body 0dbq4t1c8hpmg2sa > message.eml
relayctl --json queue show 0dbq4t1c8hpmg2sa | jq '.attempts[-1]'`,
	"relayctl queue hold": `relayctl queue hold 0dbq4t1c8hpmg2sa 0dbq4t1c9k3n5r7u
relayctl --json queue list --domain example.com | jq -r '.[].id' | relayctl queue hold -`,
	"relayctl queue release": `relayctl queue release 0dbq4t1c8hpmg2sa
relayctl --json queue list --state held | jq -r '.[].id' | relayctl queue release -`,
	"relayctl queue bounce": `relayctl queue bounce 0dbq4t1c8hpmg2sa
# give up on everything still waiting for one destination
relayctl --json queue list --domain gone.example | jq -r '.[].id' | relayctl queue bounce -`,
	"relayctl queue delete": `relayctl queue delete 0dbq4t1c8hpmg2sa
# every message with a failed recipient, with progress and a final count
relayctl --json queue list --state failed --limit 100000 | jq -r '.[].id' | relayctl queue delete -`,
	"relayctl queue retry": `relayctl queue retry 0dbq4t1c8hpmg2sa
relayctl queue retry --domain example.com
relayctl queue retry --all`,

	"relayctl reload": `relayctl reload
relayctl --config /etc/relay/relay.toml reload
sudo systemctl reload relay    # the same through systemd (SIGHUP)`,

	"relayctl user": `relayctl user hash`,
	"relayctl user hash": `relayctl user hash                 # prompts twice, prints the bcrypt hash
printf '%s\n' "$PW" | relayctl user hash --cost 12`,

	"relayctl version": `relayctl version
relayctl --json version`,

	"relayctl policy": `relayctl policy lookup example.com
relayctl policy cache list
relayctl policy stats --since 2026-03-01`,
	"relayctl policy lookup": `relayctl policy lookup example.com
relayctl policy lookup example.com --probe`,
	"relayctl policy cache": `relayctl policy cache list
relayctl policy cache flush example.com`,
	"relayctl policy cache list": `relayctl policy cache list
relayctl --json policy cache list`,
	"relayctl policy cache flush": `relayctl policy cache flush example.com
relayctl policy cache flush                # every cached policy`,
	"relayctl policy stats": `relayctl policy stats
relayctl policy stats --domain example.com --since 2026-03-01`,

	"relayctl dns": `relayctl dns records example.org
relayctl dns check example.org`,
	"relayctl dns records": `relayctl dns records example.org
relayctl --config /etc/relay/relay.toml dns records example.org`,
	"relayctl dns check": `relayctl dns check example.org
relayctl dns check example.org --resolver 127.0.0.1:53 --timeout 5s`,

	"relayctl reports": `relayctl reports list --since 7d
relayctl reports summary --domain example.org
relayctl reports show 3f1c9a7b2d4e6f80`,
	"relayctl reports list": `relayctl reports list
relayctl reports list --domain example.org --since 7d`,
	"relayctl reports show": `relayctl reports show 3f1c9a7b2d4e6f80
relayctl --json reports show 3f1c9a7b2d4e6f80`,
	"relayctl reports summary": `relayctl reports summary --since 30d
relayctl reports summary --domain example.org`,
	"relayctl reports delete": `relayctl reports delete 3f1c9a7b2d4e6f80
relayctl --json reports list --domain old.example | jq -r '.[].id' | relayctl reports delete -`,
	"relayctl reports import": `relayctl reports import google-report.json.gz
relayctl reports import ~/Mail/tlsrpt.mbox
relayctl reports import - < message.eml`,

	"relayctl completion": `# bash, for this shell
source <(relayctl completion bash)
# bash, for good (Debian: needs the bash-completion package)
relayctl completion bash | sudo tee /etc/bash_completion.d/relayctl > /dev/null
# zsh, fish
relayctl completion zsh > "${fpath[1]}/_relayctl"
relayctl completion fish > ~/.config/fish/completions/relayctl.fish`,
	"relayctl completion bash": `source <(relayctl completion bash)
relayctl completion bash | sudo tee /etc/bash_completion.d/relayctl > /dev/null`,
	"relayctl completion zsh":        `relayctl completion zsh > "${fpath[1]}/_relayctl"`,
	"relayctl completion fish":       `relayctl completion fish > ~/.config/fish/completions/relayctl.fish`,
	"relayctl completion powershell": `relayctl completion powershell | Out-String | Invoke-Expression`,
}

// addExamples sets the Example of every command in the tree under cmd
// that has none, from examples, indented as cobra's help expects.
func addExamples(cmd *cobra.Command) {
	if cmd.Example == "" {
		if ex, ok := examples[cmd.CommandPath()]; ok {
			cmd.Example = indent(ex)
		}
	}
	for _, sub := range cmd.Commands() {
		addExamples(sub)
	}
}

func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
