package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/xrash/smetrics"
)

// moduleSuggestion says, for a module path that does not exist, which
// module the user may have meant: the shared object in the same directory
// whose name is closest to the one given (at most three edits away), or
// else "" .
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
