package packaging

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDebianVersion(t *testing.T) {
	commit := time.Date(2025, 11, 30, 23, 30, 0, 0, time.FixedZone("CET", 3600)) // 22:30 UTC
	for _, c := range []struct{ describe, want string }{
		{"8c72525", "0.0~git20251130.8c72525"},
		{"8c72525-dirty", "0.0~git20251130.8c72525+dirty"},
		{"1234567", "0.0~git20251130.1234567"}, // all digits: still a hash
		{"v1.2.3", "1.2.3"},
		{"1.2", "1.2"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabc1234", "1.2.3+git20251130.4.abc1234"},
		{"v1.2.3-rc1-4-gabc1234-dirty", "1.2.3~rc1+git20251130.4.abc1234+dirty"},
		{"v1.2.3\n", "1.2.3"},
	} {
		got, err := DebianVersion(c.describe, commit)
		if err != nil || got != c.want {
			t.Errorf("DebianVersion(%q) = %q, %v; want %q", c.describe, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "release-2", "vX-3-gabc1234", "v1.2.3 foo", "devel"} {
		if got, err := DebianVersion(bad, commit); err == nil {
			t.Errorf("DebianVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// Debian's order: a release candidate before its release, a snapshot
// after it, a snapshot of no release before every release.
func TestDebianVersionsSortAsReleases(t *testing.T) {
	commit := time.Date(2025, 11, 30, 0, 0, 0, 0, time.UTC)
	order := []string{"abc1234", "v0.1.0", "v1.0.0-rc1", "v1.0.0-rc1-2-gabc1234", "v1.0.0", "v1.0.0-3-gabc1234", "v1.0.1"}
	for i := 0; i+1 < len(order); i++ {
		a, err := DebianVersion(order[i], commit)
		if err != nil {
			t.Fatal(err)
		}
		b, err := DebianVersion(order[i+1], commit)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := runCommand(time.Minute, "", nil, "dpkg", "--compare-versions", a, "lt", b); err != nil {
			t.Errorf("dpkg does not sort %s (%s) before %s (%s)", a, order[i], b, order[i+1])
		}
	}
}

func TestLibcDepends(t *testing.T) {
	got, err := LibcDepends("/bin/true") // a C program of Debian's
	if err != nil || !strings.HasPrefix(got, "libc6 (>= 2.") {
		t.Errorf("LibcDepends(/bin/true) = %q, %v", got, err)
	}
	if _, err := LibcDepends("/etc/hostname"); err == nil {
		t.Error("LibcDepends of a text file did not fail")
	}
	// pkcs11-tool needs OpenSC's and OpenSSL's libraries besides libc.
	if _, err := LibcDepends("/usr/bin/pkcs11-tool"); err == nil || !strings.Contains(err.Error(), "not glibc's") {
		t.Errorf("LibcDepends(pkcs11-tool) = %v, want a library that is not glibc's", err)
	}
}

func TestCompareNumbers(t *testing.T) {
	for _, c := range []struct {
		a, b []int
		want int
	}{
		{[]int{2, 34}, []int{2, 3, 4}, 1},
		{[]int{2, 2, 5}, []int{2, 17}, -1},
		{[]int{2, 17}, []int{2, 17, 0}, 0},
		{[]int{2, 17}, nil, 1},
	} {
		if got := compareNumbers(c.a, c.b); got != c.want {
			t.Errorf("compareNumbers(%v, %v) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestClassifyLicense(t *testing.T) {
	for text, want := range map[string]string{
		"Apache License\n   Version 2.0, January 2004":                                             "Apache-2.0",
		"MIT License\n\nPermission is hereby granted, free of\n charge, to any person":             "Expat",
		"Redistribution and use in source and binary forms ... Neither the name of Google":         "BSD-3-clause",
		"Redistribution and use in source and binary\nforms ... the names of its contributors may": "BSD-3-clause",
		"Redistribution and use in source and binary forms, with or without modification":          "BSD-2-clause",
	} {
		if got, err := classifyLicense(text); err != nil || got != want {
			t.Errorf("classifyLicense(%q) = %q, %v; want %s", text, got, err, want)
		}
	}
	if _, err := classifyLicense("GNU GENERAL PUBLIC LICENSE Version 3"); err == nil {
		t.Error("a GPL text was classified")
	}
}

func TestCopyrightLines(t *testing.T) {
	text := "Copyright (c) 2009 The Go Authors. All rights reserved.\n" +
		"> Copyright © 2011 Russ Ross\n" +
		"  copyright notice, this list of conditions\n" +
		"COPYRIGHT HOLDERS AND CONTRIBUTORS \"AS IS\"\n" +
		"COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE\n" +
		"The above copyright notice\n"
	want := []string{"2009 The Go Authors. All rights reserved", "2011 Russ Ross"}
	if got := copyrightLines(text); !reflect.DeepEqual(got, want) {
		t.Errorf("copyrightLines = %q, want %q", got, want)
	}
}

func TestFieldText(t *testing.T) {
	got := fieldText("\nfirst\n\n\tindented  \n")
	if want := " first\n .\n     indented\n"; got != want {
		t.Errorf("fieldText = %q, want %q", got, want)
	}
}

func TestEscapeModulePath(t *testing.T) {
	if got := escapeModulePath("github.com/BurntSushi/toml"); got != "github.com/!burnt!sushi/toml" {
		t.Errorf("escapeModulePath = %q", got)
	}
}

func TestModuleParagraphNeedsOneLicenseFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := moduleParagraph("x/*", "Go module x v1", dir); err == nil || !strings.Contains(err.Error(), "found 0") {
		t.Errorf("no license file: %v", err)
	}
	for _, f := range []string{"LICENSE", "COPYING"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("Copyright 2020 X\n\nPermission is hereby granted, free of charge, ..."), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := moduleParagraph("x/*", "Go module x v1", dir); err == nil || !strings.Contains(err.Error(), "found 2") {
		t.Errorf("two license files: %v", err)
	}
	os.Remove(filepath.Join(dir, "COPYING"))
	os.WriteFile(filepath.Join(dir, "NOTICE"), []byte("X\nCopyright 2020 X Inc.\n"), 0o644)
	p, err := moduleParagraph("x/*", "Go module x v1", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "Files: x/*\nCopyright: 2020 X\nLicense: Expat\n Copyright 2020 X\n .\n Permission is hereby granted, free of charge, ...\n" +
		"Comment: Go module x v1. Its NOTICE file:\n .\n X\n Copyright 2020 X Inc.\n"
	if p != want {
		t.Errorf("paragraph\n%s\nwant\n%s", p, want)
	}
}
