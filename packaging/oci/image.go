// Package oci writes a container image as an OCI image archive (an OCI
// image layout in a tar file, what `podman load`, `skopeo copy
// oci-archive:FILE` and `podman save --format oci-archive` read and write),
// reproducibly: the same trees, configuration and time give the same bytes,
// wherever and whenever the trees were staged. scripts/image.sh (make
// image) stages the trees and runs it through packaging/cmd/imagetool.
//
// It is written here rather than with buildah or umoci because those
// stamp the time of the build and the builder's owners into the layers
// and the configuration, and reproducing their output needs a container
// runtime; a layer is a sorted tar and an image is three small JSON
// documents, which archive/tar, compress/gzip and crypto/sha256 write
// deterministically with the structures of github.com/opencontainers/image-spec.
package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is an image to write: its layers, bottom first, and its
// configuration.
type Image struct {
	// Arch is the GOARCH-style architecture: amd64, arm64.
	Arch string
	// Created is the image's creation time and the time of every file and
	// archive entry: the commit's time (SOURCE_DATE_EPOCH), never the
	// build's.
	Created time.Time
	// Config is what a runtime uses: Entrypoint, User, Env, Labels...
	Config v1.ImageConfig
	// Layers are the image's file system, bottom first.
	Layers []Layer
	// RefName is the name the archive gives the image (the index's
	// org.opencontainers.image.ref.name), such as "mp-hsm:1.2.3"; podman
	// load tags the image with it. Empty: none.
	RefName string
}

// WriteArchive writes the image as an OCI image archive to w and returns
// the descriptor of its manifest (whose digest is the image's).
func (im Image) WriteArchive(w io.Writer) (v1.Descriptor, error) {
	created := im.Created.UTC()
	blobs := map[digest.Digest][]byte{}
	add := func(mediaType string, data []byte) v1.Descriptor {
		d := digest.FromBytes(data)
		blobs[d] = data
		return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
	}

	cfg := v1.Image{
		Created:  &created,
		Platform: v1.Platform{Architecture: im.Arch, OS: "linux"},
		Config:   im.Config,
		RootFS:   v1.RootFS{Type: "layers"},
	}
	var layers []v1.Descriptor
	for _, l := range im.Layers {
		b, err := l.build(created)
		if err != nil {
			return v1.Descriptor{}, err
		}
		layers = append(layers, add(v1.MediaTypeImageLayerGzip, b.gz))
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, b.diffID)
		cfg.History = append(cfg.History, v1.History{Created: &created, CreatedBy: l.CreatedBy})
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return v1.Descriptor{}, err
	}
	manifest := v1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   v1.MediaTypeImageManifest,
		Config:      add(v1.MediaTypeImageConfig, cfgJSON),
		Layers:      layers,
		Annotations: im.Config.Labels,
	}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc := add(v1.MediaTypeImageManifest, manJSON)
	desc.Platform = &v1.Platform{Architecture: im.Arch, OS: "linux"}
	if im.RefName != "" {
		desc.Annotations = map[string]string{v1.AnnotationRefName: im.RefName}
	}
	index, err := json.Marshal(v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{desc},
	})
	if err != nil {
		return v1.Descriptor{}, err
	}
	layout, err := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err != nil {
		return v1.Descriptor{}, err
	}

	files := map[string][]byte{v1.ImageLayoutFile: layout, v1.ImageIndexFile: index}
	for d, data := range blobs {
		files["blobs/"+d.Algorithm().String()+"/"+d.Encoded()] = data
	}
	if err := writeTar(w, created, []string{"blobs/", "blobs/sha256/"}, files); err != nil {
		return v1.Descriptor{}, fmt.Errorf("image archive: %w", err)
	}
	return desc, nil
}

// writeTar writes dirs and then files, each in lexical order, owned by
// root and with times mtime.
func writeTar(w io.Writer, mtime time.Time, dirs []string, files map[string][]byte) error {
	tw := tar.NewWriter(w)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		data := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, bytes.NewReader(data)); err != nil {
			return err
		}
	}
	return tw.Close()
}
