package packaging

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// copyrightHeader is the first part of the copyright file: mp-hsm itself.
const copyrightHeader = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mp-hsm
Upstream-Contact: https://github.com/mp-hsm/mp-hsm/issues
Source: https://github.com/mp-hsm/mp-hsm
Comment: /usr/bin/mp-hsm is mp-hsm linked statically with the Go standard
 library and the Go modules below; each has a paragraph with its copyright
 and license, as its own license file states them. The Files patterns name
 the Go import paths of that code.

Files: *
Copyright: the mp-hsm authors
License: Apache-2.0
`

// apacheParagraph closes the file: the Apache License 2.0 is in
// /usr/share/common-licenses, as Debian asks.
const apacheParagraph = `License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
     http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0
 can be found in the file /usr/share/common-licenses/Apache-2.0.
`

// licenseFileRe matches the names of license files in a module.
var licenseFileRe = regexp.MustCompile(`(?i)^(licen[cs]e|copying)(\.(txt|md))?$`)

// Copyright returns the copyright file, in Debian's machine-readable format
// (DEP-5), for the Go binary at binPath: mp-hsm under the Apache License
// 2.0, then a paragraph for the Go standard library (from goroot) and one
// for each module linked into the binary (from modCache, the module cache:
// `go env GOMODCACHE`), with the copyright lines and the full text of the
// module's license file, and its NOTICE file if it has one (the Apache
// License asks that it be passed on). A module without exactly one license
// file, or with a license other than Apache-2.0, Expat (MIT), BSD-2-clause
// or BSD-3-clause, is an error, so that a new dependency's license is
// looked at before it ships.
func Copyright(binPath, goroot, modCache string) (string, error) {
	info, err := buildinfo.ReadFile(binPath)
	if err != nil {
		return "", fmt.Errorf("copyright: build info of %s: %w", binPath, err)
	}
	var b strings.Builder
	b.WriteString(copyrightHeader)
	std, err := moduleParagraph("std/*", "the Go standard library and runtime, "+info.GoVersion, goroot)
	if err != nil {
		return "", err
	}
	b.WriteString("\n" + std)
	deps := info.Deps
	sort.Slice(deps, func(i, j int) bool { return deps[i].Path < deps[j].Path })
	for _, m := range deps {
		if m.Replace != nil {
			m = m.Replace
		}
		dir := filepath.Join(modCache, escapeModulePath(m.Path)+"@"+escapeModulePath(m.Version))
		p, err := moduleParagraph(m.Path+"/*", "Go module "+m.Path+" "+m.Version, dir)
		if err != nil {
			return "", err
		}
		b.WriteString("\n" + p)
	}
	b.WriteString("\n" + apacheParagraph)
	return b.String(), nil
}

// moduleParagraph is the Files paragraph of the code in dir.
func moduleParagraph(files, what, dir string) (string, error) {
	text, name, err := licenseText(dir)
	if err != nil {
		return "", fmt.Errorf("copyright: %s: %w", what, err)
	}
	license, err := classifyLicense(text)
	if err != nil {
		return "", fmt.Errorf("copyright: %s: %s: %w", what, name, err)
	}
	notice, _ := os.ReadFile(filepath.Join(dir, "NOTICE"))
	// The Apache License's text names no holder (and has lines that
	// start with "copyright"): its holders are in the NOTICE file.
	var holders []string
	if license != "Apache-2.0" {
		holders = copyrightLines(text)
	}
	if len(holders) == 0 {
		holders = copyrightLines(string(notice))
	}
	if len(holders) == 0 {
		holders = []string{"the authors of " + what}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Files: %s\nCopyright: %s\n", files, strings.Join(holders, "\n "))
	if license == "Apache-2.0" {
		b.WriteString("License: Apache-2.0\n")
	} else {
		b.WriteString("License: " + license + "\n" + fieldText(text))
	}
	comment := strings.ToUpper(what[:1]) + what[1:] + "."
	if n := strings.TrimSpace(string(notice)); n != "" {
		comment += " Its NOTICE file:\n.\n" + n
	}
	b.WriteString("Comment: " + strings.TrimPrefix(fieldText(comment), " "))
	return b.String(), nil
}

// licenseText reads the one license file in dir.
func licenseText(dir string) (text, name string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("%w (is the module downloaded? go mod download)", err)
	}
	var found []string
	for _, e := range entries {
		if !e.IsDir() && licenseFileRe.MatchString(e.Name()) {
			found = append(found, e.Name())
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("want one license file in %s, found %d: %v", dir, len(found), found)
	}
	data, err := os.ReadFile(filepath.Join(dir, found[0]))
	if err != nil {
		return "", "", err
	}
	return string(data), found[0], nil
}

// classifyLicense names a license text by its Debian short name.
func classifyLicense(text string) (string, error) {
	t := strings.Join(strings.Fields(text), " ")
	switch {
	case strings.Contains(t, "Apache License") && strings.Contains(t, "Version 2.0"):
		return "Apache-2.0", nil
	case strings.Contains(t, "Permission is hereby granted, free of charge"):
		return "Expat", nil
	case strings.Contains(t, "Redistribution and use in source and binary forms"):
		if strings.Contains(t, "Neither the name") || strings.Contains(t, "names of its contributors") {
			return "BSD-3-clause", nil
		}
		return "BSD-2-clause", nil
	}
	return "", fmt.Errorf("a license this package does not know yet: read it, then teach packaging/copyright.go its short name")
}

var copyrightLineRe = regexp.MustCompile(`(?i)^\s*>?\s*copyright\s*(?:\(c\)|©)?\s*(.+?)\s*$`)

// copyrightLines returns the holders named on "Copyright ..." lines.
func copyrightLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		m := copyrightLineRe.FindStringSubmatch(l)
		if m == nil || strings.HasPrefix(strings.ToLower(m[1]), "notice") || strings.Contains(strings.ToLower(m[1]), "holder") || strings.HasPrefix(strings.ToLower(m[1]), "owner") {
			continue // "copyright notice", "copyright holders/owner" are license wording
		}
		out = append(out, strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(m[1], "©")), "."))
	}
	return out
}

// fieldText formats text as the continuation lines of a DEP-5 field: each
// line indented by one space, an empty line as " .".
func fieldText(text string) string {
	var b strings.Builder
	lines := strings.Split(strings.Trim(strings.ReplaceAll(text, "\r\n", "\n"), "\n"), "\n")
	for _, l := range lines {
		l = strings.TrimRightFunc(strings.ReplaceAll(l, "\t", "    "), unicode.IsSpace)
		if l == "" {
			b.WriteString(" .\n")
			continue
		}
		b.WriteString(" " + l + "\n")
	}
	return b.String()
}

// escapeModulePath escapes a module path or version for the module cache:
// an upper-case letter becomes "!" and the letter in lower case.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
