package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/xrash/smetrics"
)

// moduleSuggestion names the shared object beside a missing module path
// whose name is at most three edits away, or "".
func moduleSuggestion(path string) string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	best, bestDist := "", 4
	for _, e := range entries {
		name := e.Name()
		if !strings.Contains(name, ".so") || e.IsDir() {
			continue
		}
		if d := smetrics.WagnerFischer(base, name, 1, 1, 2); d < bestDist {
			best, bestDist = filepath.Join(dir, name), d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}
