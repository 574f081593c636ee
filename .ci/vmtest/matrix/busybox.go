package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// foreignBusybox returns a static busybox for a guest architecture other
// than the host's (whose own /bin/busybox serves its guests): Debian's
// busybox-static for that architecture, fetched from suite with a private
// apt configuration like the kernels, unpacked under
// .cache/vmtest/busybox/ARCH-SUITE and reused while younger than maxAge.
// The note says which package it is.
func foreignBusybox(ctx context.Context, arch guestArch, suite string, o fetchOptions) (string, string, error) {
	dir := filepath.Join(o.cacheDir, "busybox", arch.Name+"-"+suite)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	cached, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	deb, note := "", ""
	if len(cached) == 1 {
		if st, err := os.Stat(cached[0]); err == nil && time.Since(st.ModTime()) < o.maxAge {
			deb, note = cached[0], "cached "+filepath.Base(cached[0])
		}
	}
	if deb == "" {
		fetched, err := downloadBusybox(ctx, arch, suite, dir, o)
		switch {
		case err == nil:
			deb, note = fetched, "downloaded "+filepath.Base(fetched)
		case len(cached) == 1:
			deb, note = cached[0], fmt.Sprintf("apt failed (%v); using cached %s", err, filepath.Base(cached[0]))
		default:
			return "", "", fmt.Errorf("busybox-static:%s: %w", arch.Name, err)
		}
	}
	root, err := unpack(ctx, deb, dir)
	if err != nil {
		return "", "", err
	}
	// /bin until bookworm, /usr/bin from trixie on (merged /usr).
	for _, bin := range []string{filepath.Join(root, "bin", "busybox"), filepath.Join(root, "usr", "bin", "busybox")} {
		if fileExists(bin) {
			return bin, note, requireStatic(bin, arch.Machine)
		}
	}
	return "", "", fmt.Errorf("%s has no bin/busybox nor usr/bin/busybox", filepath.Base(deb))
}

// downloadBusybox fetches the suite's busybox-static for arch into dir,
// replacing an older .deb (and its unpacked tree), and returns its path.
func downloadBusybox(ctx context.Context, arch guestArch, suite, dir string, o fetchOptions) (string, error) {
	a := apt{dir: filepath.Join(dir, "apt"), arch: arch.Name}
	if err := a.setup(suite, o); err != nil {
		return "", err
	}
	o.log("busybox-static:%s: apt-get update (%s)", arch.Name, suite)
	if _, err := a.run(ctx, dir, "apt-get", "update"); err != nil {
		return "", err
	}
	out, err := a.run(ctx, dir, "apt-cache", "madison", "busybox-static")
	if err != nil {
		return "", err
	}
	versions, err := parseMadison(out)
	if err != nil {
		return "", err
	}
	sort.SliceStable(versions, func(i, j int) bool { return compareDebVersions(versions[i].version, versions[j].version) > 0 })
	tmp, err := os.MkdirTemp(dir, "download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// Newest first; an older one where the mirror does not serve it (the
	// bullseye security pool answers 404 here), as for the kernels.
	var errs []string
	for _, v := range versions {
		if _, err = a.run(ctx, tmp, "apt-get", "download", "busybox-static="+v.version); err == nil {
			break
		}
		errs = append(errs, err.Error())
	}
	if len(versions) == 0 || len(errs) == len(versions) {
		return "", fmt.Errorf("no busybox-static could be downloaded: %s", strings.Join(errs, "; "))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download left %d .deb files", len(debs))
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	for _, d := range old {
		os.Remove(d)
		os.RemoveAll(d[:len(d)-len(".deb")] + ".root")
	}
	dst := filepath.Join(dir, filepath.Base(debs[0]))
	if err := os.Rename(debs[0], dst); err != nil {
		return "", err
	}
	// The age of the download, not the package's date, decides reuse.
	now := time.Now()
	return dst, os.Chtimes(dst, now, now)
}
