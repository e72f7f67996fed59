// Package manpage renders section-1 man pages for a urfave/cli v2
// application from the same definitions that print its --help, so that the
// pages cannot drift from it: one page for the program (NAME.1) and one for
// each visible command (NAME-COMMAND.1). Each page is markdown made here
// from the commands and flags, turned into roff by cli.App.ToManWithSection
// (go-md2man); every option reads as `COMMAND --help` prints it, with its
// default and its environment variables.
package manpage

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// Section is the manual section of the pages: user commands.
const Section = 1

// pageTemplate replaces cli.MarkdownDocTemplate while a page is rendered:
// the markdown body is made by this package and handed over in the
// application's Metadata.
const pageTemplate = "% {{ .App.Name }} {{ .SectionNum }}\n\n{{ index .App.Metadata \"manpage\" }}"

// templateMu guards the swap of the package-level cli.MarkdownDocTemplate.
var templateMu sync.Mutex

// Pages renders the man pages of app, keyed by file name: "mp-hsm.1" for
// the program and "mp-hsm-token.1" and so on for its visible commands.
// Subcommands are described on their command's page. Hidden commands and
// flags get no mention.
func Pages(app *cli.App) (map[string][]byte, error) {
	pages := map[string][]byte{}
	var see []string
	for _, c := range app.VisibleCommands() {
		see = append(see, pageName(app.Name, c.Name))
	}
	body, err := render(app.Name, programPage(app, see))
	if err != nil {
		return nil, fmt.Errorf("man page of %s: %w", app.Name, err)
	}
	pages[app.Name+".1"] = body
	for _, c := range app.VisibleCommands() {
		name := pageName(app.Name, c.Name)
		body, err := render(name, commandPage(app.Name, c))
		if err != nil {
			return nil, fmt.Errorf("man page of %s %s: %w", app.Name, c.Name, err)
		}
		pages[name+".1"] = body
	}
	return pages, nil
}

// Write renders the pages of app into dir, which must exist, and returns
// their file names, sorted.
func Write(app *cli.App, dir string) ([]string, error) {
	pages, err := Pages(app)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(pages))
	for name := range pages {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), pages[name], 0o644); err != nil {
			return nil, fmt.Errorf("writing man page: %w", err)
		}
	}
	return names, nil
}

func pageName(program, command string) string { return program + "-" + command }

// render turns a markdown page body into roff through urfave/cli's ToMan.
func render(name, markdown string) ([]byte, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	saved := cli.MarkdownDocTemplate
	cli.MarkdownDocTemplate = pageTemplate
	defer func() { cli.MarkdownDocTemplate = saved }()
	page := &cli.App{Name: name, Metadata: map[string]any{"manpage": markdown}}
	roff, err := page.ToManWithSection(Section)
	if err != nil {
		return nil, err
	}
	// go-md2man asks for no hyphenation (.nh), but groff's man macros turn
	// it on again at every paragraph unless the HY register says otherwise;
	// hyphenated flag names and variables could not be copied.
	if i := strings.Index(roff, ".TH "); i >= 0 {
		roff = roff[:i] + ".nr HY 0\n" + roff[i:]
	}
	return []byte(roff), nil
}

func programPage(app *cli.App, see []string) string {
	var b strings.Builder
	section(&b, "NAME", esc(app.Name)+" - "+esc(app.Usage))
	synopsis := "**" + esc(app.Name) + "** [*GLOBAL OPTIONS*] *COMMAND* [*OPTIONS*] [*ARGUMENTS*...]"
	if app.UsageText != "" {
		synopsis = codeBlock(app.UsageText)
	}
	section(&b, "SYNOPSIS", synopsis)
	if app.Description != "" {
		section(&b, "DESCRIPTION", esc(app.Description))
	}
	writeOptions(&b, "GLOBAL OPTIONS", app.VisibleFlagCategories(), withStandardFlags(app.VisibleFlags(), app.HideHelp, app.HideVersion))
	if cmds := app.VisibleCommands(); len(cmds) > 0 {
		var items []string
		for _, c := range cmds {
			items = append(items, definition("**"+esc(strings.Join(c.Names(), ", "))+"**",
				esc(c.Usage)+"; see **"+esc(pageName(app.Name, c.Name))+"**(1)."))
		}
		section(&b, "COMMANDS", strings.Join(items, "\n\n"))
	}
	if len(see) > 0 {
		section(&b, "SEE ALSO", seeAlso(see))
	}
	return b.String()
}

func commandPage(program string, c *cli.Command) string {
	var b strings.Builder
	full := program + " " + c.Name
	section(&b, "NAME", esc(pageName(program, c.Name))+" - "+esc(c.Usage))
	section(&b, "SYNOPSIS", synopsis(full, c))
	if c.Description != "" {
		section(&b, "DESCRIPTION", esc(c.Description))
	}
	writeOptions(&b, "OPTIONS", c.VisibleFlagCategories(), withStandardFlags(c.VisibleFlags(), c.HideHelp, true))
	if len(c.Subcommands) > 0 {
		var sub strings.Builder
		writeSubcommands(&sub, full, c.Subcommands, 3)
		section(&b, "COMMANDS", strings.TrimSpace(sub.String()))
	}
	section(&b, "SEE ALSO", seeAlso([]string{program}))
	return b.String()
}

// writeSubcommands describes nested commands, each with its own options,
// under headings one level deeper per level of nesting. go-md2man makes
// level 1 and 2 headings sections (.SH) and deeper ones subsections (.SS).
func writeSubcommands(b *strings.Builder, parent string, cmds []*cli.Command, level int) {
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		full := parent + " " + c.Name
		fmt.Fprintf(b, "%s %s\n\n", strings.Repeat("#", level), esc(full))
		if c.Usage != "" {
			b.WriteString(esc(c.Usage) + "\n\n")
		}
		b.WriteString(synopsis(full, c) + "\n\n")
		if c.Description != "" {
			b.WriteString(esc(c.Description) + "\n\n")
		}
		if opts := options(c.VisibleFlagCategories(), withStandardFlags(c.VisibleFlags(), c.HideHelp, true), level+1); opts != "" {
			b.WriteString(opts + "\n\n")
		}
		writeSubcommands(b, full, c.Subcommands, level+1)
	}
}

func synopsis(full string, c *cli.Command) string {
	if c.UsageText != "" {
		return codeBlock(c.UsageText)
	}
	s := "**" + esc(full) + "**"
	if len(c.VisibleFlags()) > 0 || !c.HideHelp {
		s += " [*OPTIONS*]"
	}
	if c.ArgsUsage != "" {
		s += " " + esc(c.ArgsUsage)
	}
	return s
}

// withStandardFlags adds the --help and --version flags that urfave/cli
// adds to an application or command when it runs, so that the page lists
// what --help does.
func withStandardFlags(flags []cli.Flag, hideHelp, hideVersion bool) []cli.Flag {
	out := append([]cli.Flag(nil), flags...)
	has := func(f cli.Flag) bool {
		for _, g := range out {
			if g == f || sameNames(g, f) {
				return true
			}
		}
		return false
	}
	if !hideHelp && cli.HelpFlag != nil && !has(cli.HelpFlag) {
		out = append(out, cli.HelpFlag)
	}
	if !hideVersion && cli.VersionFlag != nil && !has(cli.VersionFlag) {
		out = append(out, cli.VersionFlag)
	}
	return out
}

func sameNames(a, b cli.Flag) bool {
	return strings.Join(a.Names(), ",") == strings.Join(b.Names(), ",")
}

// writeOptions lists the flags under title the way --help does: by
// category when the flags have categories (flags in none first, without a
// heading), else in their order with --help (and --version) at the end.
func writeOptions(b *strings.Builder, title string, cats []cli.VisibleFlagCategory, flags []cli.Flag) {
	if body := options(cats, flags, 3); body != "" {
		section(b, title, body)
	}
}

func options(cats []cli.VisibleFlagCategory, flags []cli.Flag, level int) string {
	var parts []string
	if len(cats) > 0 {
		for _, cat := range cats {
			if len(cat.Flags()) == 0 {
				continue
			}
			var fs []cli.Flag
			for _, f := range cat.Flags() {
				fs = append(fs, f)
			}
			list := flagList(fs)
			if cat.Name() != "" {
				list = strings.Repeat("#", level) + " " + esc(cat.Name()) + "\n\n" + list
			}
			parts = append(parts, list)
		}
	} else if len(flags) > 0 {
		parts = append(parts, flagList(flags))
	}
	return strings.Join(parts, "\n\n")
}

// flagList is a definition list of flags, each as --help prints it
// (cli.FlagStringer): the flag with its placeholder, then its usage, default
// and environment variables.
func flagList(flags []cli.Flag) string {
	items := make([]string, 0, len(flags))
	for _, f := range flags {
		term, desc, _ := strings.Cut(cli.FlagStringer(f), "\t")
		items = append(items, definition("**"+esc(strings.TrimSpace(term))+"**", esc(strings.TrimSpace(desc))))
	}
	return strings.Join(items, "\n\n")
}

func definition(term, desc string) string {
	if desc == "" {
		return term + "\n:"
	}
	return term + "\n: " + strings.ReplaceAll(desc, "\n", " ")
}

func seeAlso(pages []string) string {
	refs := make([]string, len(pages))
	for i, p := range pages {
		refs[i] = "**" + esc(p) + "**(1)"
	}
	return strings.Join(refs, ", ")
}

func section(b *strings.Builder, title, body string) {
	fmt.Fprintf(b, "# %s\n\n%s\n\n", title, body)
}

// codeBlock keeps example lines as they are (indented code in markdown).
func codeBlock(text string) string {
	lines := strings.Split(strings.Trim(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}

// esc escapes the characters markdown would otherwise read as markup, so
// that text from the CLI definitions reaches the page as written.
func esc(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "[", `\[`, "]", `\]`,
		"<", `\<`, ">", `\>`, "#", `\#`, "|", `\|`, "~", `\~`)
	return r.Replace(s)
}
