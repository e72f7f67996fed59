package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

var created = time.Unix(1764500000, 0)

// stage writes a small tree under dir with the given file and directory
// modes and file times, as two checkouts or two umasks would.
func stage(t *testing.T, dir string, fileMode, dirMode os.FileMode, mtime time.Time) {
	t.Helper()
	for _, d := range []string{"usr/bin", "etc", "run/app", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), dirMode); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"usr/bin/app": "#!binary", "etc/passwd": "root:x:0:0::/:/nologin\n"}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), fileMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fileMode); err != nil {
			t.Fatal(err)
		}
		if name == "usr/bin/app" {
			if err := os.Chmod(p, fileMode|0o100); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("usr/bin", filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
}

func testImage(dir string) Image {
	return Image{
		Arch:    "amd64",
		Created: created,
		RefName: "app:1.0",
		Config: v1.ImageConfig{
			User:       "65532:65532",
			Entrypoint: []string{"/usr/bin/app"},
			Labels:     map[string]string{"org.opencontainers.image.revision": "abc", "org.opencontainers.image.licenses": "Apache-2.0"},
		},
		Layers: []Layer{{Dir: dir, CreatedBy: "test", Owners: map[string]Owner{"run/app": {65532, 65532}}}},
	}
}

func archive(t *testing.T, im Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := im.WriteArchive(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestTreesStagedDifferentlyGiveTheSameBytes(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	stage(t, a, 0o644, 0o755, time.Now())
	stage(t, b, 0o600, 0o700, time.Unix(1, 0))
	x, y := archive(t, testImage(a)), archive(t, testImage(b))
	if !bytes.Equal(x, y) {
		t.Fatalf("the same tree staged with other modes and times gave other bytes (%d and %d bytes)", len(x), len(y))
	}
	// And a change in content is seen.
	if err := os.WriteFile(filepath.Join(b, "etc/passwd"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(x, archive(t, testImage(b))) {
		t.Fatal("another file content gave the same bytes")
	}
}

// readTar returns the entries of a tar in order, with their contents.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var hs []*tar.Header
	data := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hs, data[h.Name] = append(hs, h), b
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

func TestArchiveIsAnOCILayoutThatAddsUp(t *testing.T) {
	dir := t.TempDir()
	stage(t, dir, 0o644, 0o755, time.Now())
	_, files := readTar(t, bytes.NewReader(archive(t, testImage(dir))))
	blob := func(d string) []byte {
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok || sha(b) != d {
			t.Fatalf("blob %s missing or not of its digest", d)
		}
		return b
	}
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %s", got)
	}
	var index v1.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	if got := index.Manifests[0].Annotations[v1.AnnotationRefName]; got != "app:1.0" {
		t.Errorf("ref name %q, want app:1.0", got)
	}
	var m v1.Manifest
	if err := json.Unmarshal(blob(index.Manifests[0].Digest.String()), &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest: %v, %d layers", err, len(m.Layers))
	}
	var cfg v1.Image
	if err := json.Unmarshal(blob(m.Config.Digest.String()), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || cfg.Created == nil || !cfg.Created.Equal(created) || cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("config: user %q, created %v, platform %s/%s", cfg.Config.User, cfg.Created, cfg.OS, cfg.Architecture)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(m.Layers[0].Digest.String())))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0].String() != sha(layer) {
		t.Errorf("diff_ids %v, want the digest of the uncompressed layer %s", cfg.RootFS.DiffIDs, sha(layer))
	}
	hs, _ := readTar(t, bytes.NewReader(layer))
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
		if !h.ModTime.Equal(created) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: time %v, owner names %q %q", h.Name, h.ModTime, h.Uname, h.Gname)
		}
		want := map[string][3]int64{ // mode, uid, gid
			"bin": {0o777, 0, 0}, "etc/": {0o755, 0, 0}, "etc/passwd": {0o644, 0, 0}, "run/": {0o755, 0, 0},
			"run/app/": {0o755, 65532, 65532}, "tmp/": {0o1777, 0, 0}, "usr/": {0o755, 0, 0},
			"usr/bin/": {0o755, 0, 0}, "usr/bin/app": {0o755, 0, 0},
		}[h.Name]
		if got := [3]int64{h.Mode, int64(h.Uid), int64(h.Gid)}; got != want {
			t.Errorf("%s: mode %o, owner %d:%d, want %o, %d:%d", h.Name, got[0], got[1], got[2], want[0], want[1], want[2])
		}
	}
	if got := strings.Join(names, " "); got != "bin etc/ etc/passwd run/ run/app/ tmp/ usr/ usr/bin/ usr/bin/app" {
		t.Errorf("layer entries %s, want them sorted", got)
	}
}

func TestWhatALayerCannotHoldIsRefused(t *testing.T) {
	for name, setup := range map[string]func(dir string) error{
		"a FIFO": func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644) },
		"a hard link": func(dir string) error {
			return os.Link(filepath.Join(dir, "etc/passwd"), filepath.Join(dir, "etc/passwd2"))
		},
	} {
		dir := t.TempDir()
		stage(t, dir, 0o644, 0o755, created)
		if err := setup(dir); err != nil {
			t.Fatal(err)
		}
		_, err := testImage(dir).WriteArchive(io.Discard)
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: %v, want an error that names the path", name, err)
		}
	}
	dir := t.TempDir()
	stage(t, dir, 0o644, 0o755, created)
	im := testImage(dir)
	im.Layers[0].Owners["run/missing"] = Owner{1, 1}
	if _, err := im.WriteArchive(io.Discard); err == nil || !strings.Contains(err.Error(), "run/missing") {
		t.Errorf("an owner for a path not in the tree: %v, want an error naming it", err)
	}
}
