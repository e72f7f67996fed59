package manpage

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func testApp() *cli.App {
	return &cli.App{
		Name:        "tool",
		Usage:       "does things with *stars* and <angles>",
		Description: "First paragraph.\n\nSecond_paragraph with MP_HSM_X.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "`LEVEL` of logs", EnvVars: []string{"TOOL_LOG_LEVEL"}},
		},
		Commands: []*cli.Command{
			{
				Name:      "get",
				Usage:     "get a thing",
				UsageText: "tool get --id ID\ntool get --all",
				Flags: []cli.Flag{
					&cli.StringFlag{Category: "Choosing", Name: "id", Usage: "thing `ID`", EnvVars: []string{"TOOL_ID"}},
					&cli.StringSliceFlag{Category: "Choosing", Name: "scope", Usage: "`SCOPE` (prefix* allowed)"},
					&cli.BoolFlag{Name: "all", Usage: "every thing"},
					&cli.BoolFlag{Name: "secret-knob", Hidden: true},
				},
			},
			{
				Name:  "key",
				Usage: "manage keys",
				Subcommands: []*cli.Command{
					{Name: "generate", Usage: "make a key", ArgsUsage: "LABEL", Flags: []cli.Flag{
						&cli.StringFlag{Name: "type", Value: "rsa:2048", Usage: "key `TYPE`"},
					}},
				},
			},
			{Name: "internal", Hidden: true, Usage: "not for users"},
		},
	}
}

func TestPagesNamesOnePagePerVisibleCommand(t *testing.T) {
	pages, err := Pages(testApp())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range pages {
		names = append(names, n)
	}
	want := map[string]bool{"tool.1": true, "tool-get.1": true, "tool-key.1": true}
	if len(pages) != len(want) {
		t.Fatalf("pages %v, want %v", names, want)
	}
	for n := range want {
		if _, ok := pages[n]; !ok {
			t.Errorf("no page %s among %v", n, names)
		}
	}
}

func TestCommandPageHasFlagsAsHelpPrintsThem(t *testing.T) {
	pages, err := Pages(testApp())
	if err != nil {
		t.Fatal(err)
	}
	get := string(pages["tool-get.1"])
	for _, want := range []string{
		".nr HY 0\n.TH tool-get 1", // no hyphenation
		"tool-get \\- get a thing", // whatis entry: name \- description
		".SS Choosing",
		`\fB--id ID\fP`,
		"thing ID [$TOOL_ID]",
		`\fB--scope SCOPE [ --scope SCOPE ]\fP`,
		"SCOPE (prefix* allowed)",
		`\fB--all\fP`,
		"tool get --id ID\ntool get --all", // usage text kept line by line
		`\fBtool\fP(1)`,
	} {
		if !strings.Contains(get, want) {
			t.Errorf("tool-get.1 lacks %q:\n%s", want, get)
		}
	}
	if strings.Contains(get, "secret-knob") {
		t.Errorf("tool-get.1 shows a hidden flag:\n%s", get)
	}
	// A categorized command's --help does not list --help: neither does the page.
	if strings.Contains(get, `\fB--help`) {
		t.Errorf("tool-get.1 lists --help, which `tool get --help` does not:\n%s", get)
	}
}

func TestProgramPageListsGlobalOptionsAndCommands(t *testing.T) {
	pages, err := Pages(testApp())
	if err != nil {
		t.Fatal(err)
	}
	top := string(pages["tool.1"])
	for _, want := range []string{
		"tool \\- does things with *stars* and <angles>",
		"Second_paragraph with MP_HSM_X.",
		".SH GLOBAL OPTIONS",
		`\fB--log-level LEVEL\fP`,
		`(default: "warn") [$TOOL_LOG_LEVEL]`,
		`\fB--help, -h\fP`,
		`\fB--version, -v\fP`,
		`see \fBtool-get\fP(1)`,
		`\fBtool-key\fP(1)`,
	} {
		if !strings.Contains(top, want) {
			t.Errorf("tool.1 lacks %q:\n%s", want, top)
		}
	}
	if strings.Contains(top, "internal") {
		t.Errorf("tool.1 names a hidden command:\n%s", top)
	}
}

func TestSubcommandsOnTheirCommandsPage(t *testing.T) {
	pages, err := Pages(testApp())
	if err != nil {
		t.Fatal(err)
	}
	key := string(pages["tool-key.1"])
	for _, want := range []string{".SS tool key generate", "make a key", `\fBtool key generate\fP [\fIOPTIONS\fP] LABEL`, `\fB--type TYPE\fP`, `(default: "rsa:2048")`, `\fB--help, -h\fP`} {
		if !strings.Contains(key, want) {
			t.Errorf("tool-key.1 lacks %q:\n%s", want, key)
		}
	}
}

func TestWriteIsDeterministicAndRestoresTheTemplate(t *testing.T) {
	before := cli.MarkdownDocTemplate
	dir1, dir2 := t.TempDir(), t.TempDir()
	names1, err := Write(testApp(), dir1)
	if err != nil {
		t.Fatal(err)
	}
	names2, err := Write(testApp(), dir2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tool-get.1", "tool-key.1", "tool.1"}; !reflect.DeepEqual(names1, want) || !reflect.DeepEqual(names2, want) {
		t.Fatalf("Write returned %v and %v, want %v", names1, names2, want)
	}
	for _, n := range names1 {
		a, _ := os.ReadFile(filepath.Join(dir1, n))
		b, _ := os.ReadFile(filepath.Join(dir2, n))
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("%s differs between two runs (or is empty)", n)
		}
	}
	if cli.MarkdownDocTemplate != before {
		t.Error("cli.MarkdownDocTemplate was not restored")
	}
}

func TestWriteFailsOnAMissingDirectory(t *testing.T) {
	_, err := Write(testApp(), filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "writing man page") {
		t.Fatalf("err = %v, want a wrapped write error", err)
	}
}
