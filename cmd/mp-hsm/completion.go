package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/internal/manpage"
)

const bashCompletion = `# bash completion for mp-hsm; load with: source <(mp-hsm completion bash)
_mp_hsm_complete() {
  local cur opts
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _mp_hsm_complete mp-hsm
`

const zshCompletion = `#compdef mp-hsm
# zsh completion for mp-hsm; load with: source <(mp-hsm completion zsh)
_mp_hsm() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  _describe 'values' opts
}
compdef _mp_hsm mp-hsm
# Autoloaded from $fpath (the Debian package's vendor-completions/_mp-hsm):
# this file is the completion function, so complete now, not only on the
# next TAB.
if [[ "${funcstack[1]}" == "_mp-hsm" ]]; then
  _mp_hsm "$@"
fi
`

func completionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		UsageText: "source <(mp-hsm completion bash)",
		ArgsUsage: "bash|zsh|fish",
		Action: func(c *cli.Context) error {
			script, ok := map[string]string{"bash": bashCompletion, "zsh": zshCompletion}[c.Args().First()]
			if c.Args().First() == "fish" {
				var err error
				if script, err = c.App.ToFishCompletion(); err != nil {
					return err
				}
			} else if !ok {
				return usagef("completion: name a shell: bash, zsh or fish")
			}
			_, err := fmt.Fprint(e.stdout, script)
			return err
		},
	}
}

// manPagesCommand writes the man pages from the commands' own help; hidden,
// for scripts/deb.sh.
func manPagesCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "man-pages",
		Usage:     "write the man pages into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("man-pages: give the one directory to write the pages into")
			}
			names, err := manpage.Write(c.App, c.Args().First())
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(e.stdout, n)
			}
			return nil
		},
	}
}
