package safefile

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestOneOpener keeps this package the one way mp-hsm opens a file: no
// other non-test file of the command and the library packages calls
// os.Open, os.OpenFile, os.ReadFile, os.Create or os.WriteFile (nor their
// ioutil forms), and io.ReadAll reads only through a reader that bounds it
// (io.LimitReader, http.MaxBytesReader). Test harnesses under internal/
// (SoftHSM2 and the other backends, the PKCS#11 shims, the conformance
// suite) set up tests and are not mp-hsm: they are not checked.
func TestOneOpener(t *testing.T) {
	root := filepath.Join("..", "..")
	dirs := []string{"cmd", "daemon", "signer", "admin", "grant", "doctor", "hsm", "inspect", "pkcs11uri", "tokenerr",
		"internal/changelock", "internal/manpage", "internal/orgid", "internal/textsafe"}
	// The binary's two other kinds of file, each opened in one place: lock
	// files, only flocked (never read or written), and the man pages the
	// hidden man-pages command writes for the Debian package.
	exempt := map[string]bool{
		"internal/changelock/changelock.go os.OpenFile": true,
		"internal/manpage/manpage.go os.WriteFile":      true,
	}
	banned := map[string]bool{
		"os.Open": true, "os.OpenFile": true, "os.ReadFile": true, "os.Create": true, "os.WriteFile": true,
		"ioutil.ReadFile": true, "ioutil.ReadAll": true, "ioutil.WriteFile": true,
	}
	checked := 0
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, de fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if de.IsDir() && (de.Name() == "testdata") {
				return filepath.SkipDir
			}
			if de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			checked++
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				name := callName(call.Fun)
				switch {
				case banned[name] && exempt[filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))+" "+name]:
				case banned[name]:
					t.Errorf("%s: %s: open files with internal/safefile (Read, ReadPrivate, OpenAppend)", fset.Position(call.Pos()), name)
				case name == "io.ReadAll" && len(call.Args) == 1:
					if inner, ok := call.Args[0].(*ast.CallExpr); !ok || (callName(inner.Fun) != "io.LimitReader" && callName(inner.Fun) != "http.MaxBytesReader") {
						t.Errorf("%s: io.ReadAll of a reader without a bound: wrap it in io.LimitReader or http.MaxBytesReader, or read a file with internal/safefile", fset.Position(call.Pos()))
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 50 {
		t.Fatalf("checked %d files: is the module root %s?", checked, root)
	}
}

// callName returns "pkg.Func" for a call of a package's function.
func callName(fun ast.Expr) string {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	id, ok := sel.X.(*ast.Ident)
	if !ok {
		return ""
	}
	return id.Name + "." + sel.Sel.Name
}
