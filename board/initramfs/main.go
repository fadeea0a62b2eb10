// Command initramfs writes the emulated board's initramfs: a newc cpio archive with a
// static busybox, an /init script, and the kernel modules the root file system needs
// (virtio disk, ext4), in the order their dependencies want. Debian's arm64 kernel builds
// those as modules, and the host has neither cpio nor depmod, so this reads the modules'
// own .modinfo sections to order them.
//
//	go run ./board/initramfs -o initrd.img -busybox bin/busybox -init board/guest/init \
//	    -moddir lib/modules/6.1.0-50-arm64 virtio_blk virtio_pci ext4
package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("o", "", "the initramfs to write")
	busybox := flag.String("busybox", "", "a static busybox for the target")
	initScript := flag.String("init", "", "the /init script")
	moddir := flag.String("moddir", "", "the kernel's module tree (lib/modules/VERSION)")
	flag.Parse()
	if *out == "" || *busybox == "" || *initScript == "" || *moddir == "" {
		fmt.Fprintln(os.Stderr, "usage: initramfs -o FILE -busybox FILE -init FILE -moddir DIR MODULE...")
		os.Exit(2)
	}
	if err := run(*out, *busybox, *initScript, *moddir, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "initramfs: %v\n", err)
		os.Exit(1)
	}
}

func run(out, busybox, initScript, moddir string, want []string) error {
	mods, err := indexModules(moddir)
	if err != nil {
		return err
	}
	order, err := loadOrder(mods, want)
	if err != nil {
		return err
	}
	var w cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"} {
		w.dir(d)
	}
	if err := w.fileFrom("bin/busybox", busybox, 0o755); err != nil {
		return err
	}
	if err := w.fileFrom("init", initScript, 0o755); err != nil {
		return err
	}
	var list strings.Builder
	for _, name := range order {
		if err := w.fileFrom("lib/modules/"+name+".ko", mods[name], 0o644); err != nil {
			return err
		}
		list.WriteString(name + "\n")
	}
	w.file("lib/modules/order", []byte(list.String()), 0o644)
	return os.WriteFile(out, w.finish(), 0o644)
}

// indexModules maps module names (dashes as underscores, as the kernel names them) to
// their files.
func indexModules(dir string) (map[string]string, error) {
	mods := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			mods[modName(filepath.Base(p))] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules under %s: %w", dir, err)
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("no uncompressed modules (.ko) under %s", dir)
	}
	return mods, nil
}

func modName(file string) string {
	return strings.ReplaceAll(strings.TrimSuffix(file, ".ko"), "-", "_")
}

// loadOrder lists want and everything they depend on, each after its dependencies.
func loadOrder(mods map[string]string, want []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle", name)
		case 2:
			return nil
		}
		path, ok := mods[name]
		if !ok {
			return fmt.Errorf("module %s: not in the module tree (built into the kernel? then leave it out)", name)
		}
		state[name] = 1
		deps, err := depends(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, n := range want {
		if err := visit(modName(n)); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// depends reads "depends=a,b" from a module's .modinfo section.
func depends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// cpioWriter builds a "newc" cpio archive, the format the kernel unpacks.
type cpioWriter struct {
	buf bytes.Buffer
	ino uint32
}

func (w *cpioWriter) entry(name string, mode uint32, data []byte) {
	w.ino++
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, 0o040755, nil) }

func (w *cpioWriter) file(name string, data []byte, perm uint32) {
	w.entry(name, 0o100000|perm, data)
}

func (w *cpioWriter) fileFrom(name, src string, perm uint32) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	if len(data) == 0 {
		return errors.New("add " + name + ": empty file " + src)
	}
	w.file(name, data, perm)
	return nil
}

func (w *cpioWriter) finish() []byte {
	w.entry("TRAILER!!!", 0, nil)
	return w.buf.Bytes()
}
