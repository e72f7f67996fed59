// Command imagetool writes an OCI image archive from staged trees, one
// layer each, reproducibly (see package oci); scripts/image.sh runs it.
//
//	imagetool -out FILE -arch amd64 -epoch SOURCE_DATE_EPOCH -ref mp-hsm:TAG \
//	  -entrypoint /usr/bin/mp-hsm -user 65532:65532 -env K=V... -label K=V... \
//	  -owner PATH=UID:GID... DIR=CREATED_BY...
//
// It prints the image's manifest digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/mp-hsm/mp-hsm/packaging/oci"
)

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagetool", flag.ContinueOnError)
	out := fs.String("out", "", "write the archive to FILE")
	arch := fs.String("arch", "", "architecture (amd64, arm64)")
	epoch := fs.Int64("epoch", -1, "creation time, seconds since 1970 (SOURCE_DATE_EPOCH)")
	ref := fs.String("ref", "", "name of the image in the archive, such as mp-hsm:1.2.3")
	entrypoint := fs.String("entrypoint", "", "the program the image runs")
	user := fs.String("user", "", "UID:GID the image runs as")
	workdir := fs.String("workdir", "/", "working directory")
	var env, labels, owners list
	fs.Var(&env, "env", "K=V in the environment (repeatable)")
	fs.Var(&labels, "label", "K=V label (repeatable)")
	fs.Var(&owners, "owner", "PATH=UID:GID: a path in the layers owned by another than root (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *arch == "" || *epoch < 0 || *entrypoint == "" || fs.NArg() == 0 {
		return fmt.Errorf("-out, -arch, -epoch, -entrypoint and at least one DIR=CREATED_BY are needed")
	}
	im := oci.Image{
		Arch:    *arch,
		Created: time.Unix(*epoch, 0),
		RefName: *ref,
		Config: v1.ImageConfig{
			User:       *user,
			Env:        env,
			Entrypoint: []string{*entrypoint},
			WorkingDir: *workdir,
			Labels:     map[string]string{},
		},
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want K=V", l)
		}
		im.Config.Labels[k] = v
	}
	own := map[string]oci.Owner{}
	for _, o := range owners {
		path, ids, ok1 := strings.Cut(o, "=")
		u, g, ok2 := strings.Cut(ids, ":")
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return fmt.Errorf("-owner %q: want PATH=UID:GID", o)
		}
		own[path] = oci.Owner{UID: uid, GID: gid}
	}
	for _, a := range fs.Args() {
		dir, by, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("layer %q: want DIR=CREATED_BY", a)
		}
		l := oci.Layer{Dir: dir, CreatedBy: by, Owners: map[string]oci.Owner{}}
		// Each owner belongs to the layer whose tree holds the path.
		for p, o := range own {
			if _, err := os.Lstat(dir + "/" + p); err == nil {
				l.Owners[p] = o
				delete(own, p)
			}
		}
		im.Layers = append(im.Layers, l)
	}
	for p := range own {
		return fmt.Errorf("-owner %s: no layer holds it", p)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	desc, err := im.WriteArchive(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Println(desc.Digest)
	return nil
}
