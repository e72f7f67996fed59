package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// Owner is a numeric owner of a file in a layer.
type Owner struct{ UID, GID int }

// Layer is one layer of an image: the tree under Dir, as it is on disk
// but for owners, modes and times, which the layer fixes (see WriteTar).
type Layer struct {
	// Dir is the root of the tree; it is not itself an entry.
	Dir string
	// CreatedBy says in the image's history what the layer holds.
	CreatedBy string
	// Owners gives some paths (relative to Dir, slash-separated, such as
	// "run/mp-hsm") an owner other than root.
	Owners map[string]Owner
}

// blob is a layer made: its compressed bytes and the digest of the tar.
type blob struct {
	gz     []byte
	diffID digest.Digest
}

// build writes the layer's tar with times mtime and compresses it.
func (l Layer) build(mtime time.Time) (blob, error) {
	var tarBuf bytes.Buffer
	if err := l.WriteTar(&tarBuf, mtime); err != nil {
		return blob{}, err
	}
	sum := sha256.Sum256(tarBuf.Bytes())
	var gz bytes.Buffer
	// compress/gzip writes no name, no time and OS "unknown" unless told:
	// the same tar gives the same bytes with the same Go.
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return blob{}, err
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return blob{}, err
	}
	if err := zw.Close(); err != nil {
		return blob{}, err
	}
	return blob{gz: gz.Bytes(), diffID: digest.NewDigestFromBytes(digest.SHA256, sum[:])}, nil
}

// WriteTar writes the tree under l.Dir as an uncompressed tar, the same
// bytes for the same tree wherever and whenever it is staged: entries in
// lexical order of their paths (a directory before what it holds), every
// time mtime, owner root (uid and gid 0, no names) unless l.Owners says
// otherwise, and modes fixed by kind: directories 0755 (01777 if the
// sticky bit is set, as for /tmp), regular files 0755 if the owner may
// execute them and 0644 if not, symbolic links as they are. Anything else
// (a device, a FIFO, a socket, a hard link's second name) is refused.
func (l Layer) WriteTar(w io.Writer, mtime time.Time) error {
	tw := tar.NewWriter(w)
	seen := map[uint64]string{} // inode -> first path, to refuse hard links
	used := map[string]bool{}
	err := filepath.WalkDir(l.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(l.Dir, path)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: name, ModTime: mtime}
		if o, ok := l.Owners[name]; ok {
			h.Uid, h.Gid = o.UID, o.GID
			used[name] = true
		}
		m := fi.Mode()
		switch {
		case m.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
			if m&fs.ModeSticky != 0 {
				h.Mode = 0o1777
			}
		case m&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
		case m.IsRegular():
			if ino, ok := inode(fi); ok {
				if first, dup := seen[ino]; dup {
					return fmt.Errorf("%s: a hard link to %s; stage a copy", path, first)
				}
				seen[ino] = name
			}
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o644
			if m.Perm()&0o100 != 0 {
				h.Mode = 0o755
			}
		default:
			return fmt.Errorf("%s: a %s cannot go into an image layer", path, m.Type())
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, f); err != nil || n != h.Size {
			return fmt.Errorf("%s: changed while being read (%d of %d bytes): %v", path, n, h.Size, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Dir, err)
	}
	for name := range l.Owners {
		if !used[name] {
			return fmt.Errorf("layer %s: an owner is given for %s, which is not in the tree", l.Dir, name)
		}
	}
	return tw.Close()
}

// inode is the inode number of a file with more than one name.
func inode(fi fs.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || uint64(st.Nlink) < 2 {
		return 0, false
	}
	return uint64(st.Ino), true
}
