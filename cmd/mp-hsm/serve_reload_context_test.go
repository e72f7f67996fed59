package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestReloadContext checks what a SIGHUP serves from: the --config file
// read again, the flags of the command line as at start (they still win
// over the file), and an option the new file drops back at its default.
func TestReloadContext(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "c.toml")
	write := func(s string) {
		if err := os.WriteFile(conf, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("max-keys = 7\nallowed-scopes = [\"a\"]\nsocket-mode = \"0600\"\nmax-concurrent = 3\n")
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: os.Getenv, log: slog.New(slog.DiscardHandler)}
	app := newApp(e)
	ran := false
	for _, cmd := range app.Commands {
		if cmd.Name != "serve" {
			continue
		}
		cmd.Action = func(c *cli.Context) error {
			ran = true
			if c.Int("max-keys") != 7 || c.String("socket-mode") != "0640" || c.Int("max-concurrent") != 3 {
				t.Errorf("at start: max-keys %d, socket-mode %q, max-concurrent %d; want 7, the flag's 0640, 3", c.Int("max-keys"), c.String("socket-mode"), c.Int("max-concurrent"))
			}
			write("max-keys = 9\nallowed-scopes = [\"b\"]\nsocket-mode = \"0660\"\n")
			re, nc, err := e.reloadContext(c)
			if err != nil {
				t.Fatal(err)
			}
			if nc.Int("max-keys") != 9 || nc.String("socket-mode") != "0640" || nc.Int("max-concurrent") != 4 ||
				!slices.Equal(nc.StringSlice("allowed-scopes"), []string{"x", "y"}) || !nc.Bool("allow-remote") {
				t.Errorf("after the reload: max-keys %d, socket-mode %q, max-concurrent %d, allowed-scopes %q, allow-remote %v; want 9 (the new file), 0640, 4 (the default), [x y], true (the flags)",
					nc.Int("max-keys"), nc.String("socket-mode"), nc.Int("max-concurrent"), nc.StringSlice("allowed-scopes"), nc.Bool("allow-remote"))
			}
			if re.serveFile == e.serveFile || re.serveFile.values["max-keys"] != 9 {
				t.Errorf("the reload's file: %+v; want the new one, the start's kept in e", re.serveFile)
			}
			return nil
		}
	}
	err := app.Run([]string{"mp-hsm", "serve", "--config", conf, "--socket-mode", "0640", "--allowed-scopes", "x", "--allowed-scopes", "y", "--allow-remote"})
	if err != nil || !ran {
		t.Fatalf("serve: %v (ran %v)", err, ran)
	}
}
