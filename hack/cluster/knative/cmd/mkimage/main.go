// Command mkimage builds a container image without a registry or a Docker
// engine: one layer of static files, written as a docker-save tarball that
// `ctr -n k8s.io images import` loads into containerd. It is TEST
// INFRASTRUCTURE for the e2e cluster (hack/cluster/up.sh), not part of kstate.
//
//	mkimage -o out.tar -tag dev.local/kstate/agent:e2e \
//	    -entrypoint /app/agent -user 65532 \
//	    -file ./bin/agent:/app/agent -symlink /bin/sh=/bin/busybox -env K=V
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var files, links, envs, entry multi
	out := flag.String("o", "", "output tarball")
	tag := flag.String("tag", "", "image reference, e.g. dev.local/x:tag")
	user := flag.String("user", "65532", "user the image runs as")
	workdir := flag.String("workdir", "/", "working directory")
	flag.Var(&files, "file", "SRC:DST copies a host file into the image (repeatable)")
	flag.Var(&links, "symlink", "DST=TARGET adds a symlink (repeatable)")
	flag.Var(&envs, "env", "K=V (repeatable)")
	flag.Var(&entry, "entrypoint", "entrypoint argument (repeatable)")
	flag.Parse()
	if *out == "" || *tag == "" || len(entry) == 0 {
		log.Fatal("mkimage: -o, -tag and -entrypoint are required")
	}
	ref, err := name.ParseReference(*tag)
	if err != nil {
		log.Fatalf("mkimage: bad -tag: %v", err)
	}

	layerTar, err := buildLayer(files, links)
	if err != nil {
		log.Fatalf("mkimage: %v", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		log.Fatalf("mkimage: layer: %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		log.Fatalf("mkimage: append layer: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		log.Fatalf("mkimage: config: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = entry
	cf.Config.User = *user
	cf.Config.WorkingDir = *workdir
	cf.Config.Env = append([]string{"PATH=/bin:/usr/bin:/usr/local/bin", "HOME=/tmp"}, envs...)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		log.Fatalf("mkimage: set config: %v", err)
	}
	if err := tarball.WriteToFile(*out, ref, img); err != nil {
		log.Fatalf("mkimage: write %s: %v", *out, err)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s\n", ref, d)
}

// buildLayer returns one uncompressed layer: a minimal filesystem (/tmp,
// /etc/passwd with root and nonroot=65532) plus the given files and links.
func buildLayer(files, links []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		if p == "/" || p == "." || dirs[p] {
			return nil
		}
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		dirs[p] = true
		mode := int64(0o755)
		if p == "/tmp" {
			mode = 0o1777
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: mode, ModTime: epoch})
	}
	add := func(dst string, data []byte, mode int64) error {
		if err := mkdirs(path.Dir(dst)); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := mkdirs("/tmp"); err != nil {
		return nil, err
	}
	if err := add("/etc/passwd", []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), 0o644); err != nil {
		return nil, err
	}
	if err := add("/etc/group", []byte("root:x:0:\nnonroot:x:65532:\n"), 0o644); err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, f := range files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok || !path.IsAbs(dst) {
			return nil, fmt.Errorf("bad -file %q: want SRC:/abs/DST", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if err := add(dst, data, int64(st.Mode().Perm())); err != nil {
			return nil, err
		}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok || !path.IsAbs(dst) {
			return nil, fmt.Errorf("bad -symlink %q: want /abs/DST=TARGET", l)
		}
		if err := mkdirs(path.Dir(dst)); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(dst, "/"), Linkname: target, Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
