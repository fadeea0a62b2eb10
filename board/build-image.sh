#!/usr/bin/env bash
# Builds the emulated board (Debian 12 arm64, systemd) that `make test-board` boots under
# qemu-system-aarch64, from Debian's packages only, into $BOARD_CACHE (board/.cache):
#   vmlinuz      the kernel of Debian's linux-image-arm64
#   initrd.img   a small initramfs (board/initramfs): busybox, the disk and ext4 modules
#   base.img     the root file system, a raw ext4 image
#   id_ed25519   the key root logs in with over ssh
# The host cannot run arm64 binaries (no binfmt_misc), so debootstrap's first stage runs
# here and the second stage at the image's first boot, under QEMU (board/guest/stage2).
# Debian's arm64 kernel has neither i2c-stub nor gpio-sim: they are built here, with
# Debian's cross compiler, from Debian's linux-source against Debian's headers, all of the
# kernel's exact version. A cached image is reused while this script and board/guest/ and
# board/initramfs/ are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${BOARD_CACHE:-board/.cache}
MIRROR=${BOARD_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
GO=${GO:-go}
# What the checks use besides systemd: ssh for the harness, i2c-tools and gpiod for the
# simulated buses, timesyncd for the clock step.
# The kernel is not among them: its package is unpacked on the host (below), which spares
# the first boot dpkg's copy of 300 MB of modules and an initramfs nobody boots.
PACKAGES=systemd-sysv,udev,kmod,openssh-server,i2c-tools,gpiod,procps,iproute2,systemd-timesyncd,e2fsprogs

export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(id -u)" -ne 0 ]; then
	echo "build-image: debootstrap needs root (run make test-board as root or with sudo)" >&2
	exit 1
fi
# Debian's packages for the build, installed when missing.
need=()
for tp in debootstrap:debootstrap qemu-system-aarch64:qemu-system-arm mkfs.ext4:e2fsprogs dpkg-deb:dpkg \
	ssh-keygen:openssh-client wget:wget sha256sum:coreutils make:make aarch64-linux-gnu-gcc-12:gcc-aarch64-linux-gnu; do
	command -v "${tp%%:*}" >/dev/null || need+=("${tp#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "build-image: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

key=$(cat board/build-image.sh board/guest/init board/guest/stage2 board/guest/modules/* board/initramfs/*.go | sha256sum | cut -c1-16)
if [ -f "$CACHE/base.img" ] && [ "$(cat "$CACHE/key" 2>/dev/null)" = "$key" ]; then
	echo "build-image: cached image $CACHE/base.img ($key)"
	exit 0
fi

start=$(date +%s)
mkdir -p "$CACHE"
rm -rf "$CACHE/build" "$CACHE/key" "$CACHE/base.img"
work="$CACHE/build"
root="$work/root"
mkdir -p "$work"

echo "build-image: debootstrap (first stage) of $SUITE arm64 from $MIRROR"
debootstrap --foreign --arch=arm64 --variant=minbase --include="$PACKAGES" \
	"$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
	tail -20 "$work/debootstrap.log" >&2
	exit 1
}

# debootstrap links proc to the host's when it thinks it runs in a container.
for d in proc sys; do
	if [ -L "$root/$d" ]; then rm "$root/$d" && mkdir "$root/$d"; fi
done

# Packages fetched here come from the index debootstrap verified, checked by their SHA256.
index=$(ls "$root"/var/lib/apt/lists/*_Packages)
field() { # package field [version] → that field of each listed version of the package
	awk -v p="$1" -v k="$2:" -v v="${3:-}" '
		/^Package: /{n=$2; val=""; ver=""} /^Version: /{ver=$2}
		index($0, k)==1{val=substr($0, length(k)+2)}
		/^$/{ if (n==p && (v=="" || ver==v) && val!="") print val; n="" }' "$index"
}
newest() { field "$1" Version | sort -V | tail -1; }
fetch() { # package version → $work/package.deb
	local f sum
	f=$(field "$1" Filename "$2")
	sum=$(field "$1" SHA256 "$2")
	if [ -z "$f" ] || [ -z "$sum" ]; then
		echo "build-image: $1 $2 is not in $index" >&2
		exit 1
	fi
	wget -q -O "$work/$1.deb" "$MIRROR/$f"
	echo "$sum  $work/$1.deb" | sha256sum -c --quiet
}

# The kernel: linux-image-arm64 names the current linux-image-VERSION-arm64, which is
# unpacked into the root file system (vmlinuz, modules) and for the initramfs.
kpkgver=$(newest linux-image-arm64)
kpkg=$(field linux-image-arm64 Depends "$kpkgver" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*-arm64\).*/\1/p' | head -1)
[ -n "$kpkg" ] || { echo "build-image: no kernel package in $index" >&2; exit 1; }
fetch "$kpkg" "$kpkgver"
dpkg-deb -x "$work/$kpkg.deb" "$work/kernel"
kver=${kpkg#linux-image-}
# Copied, not unpacked over the root: the package's ./lib would replace merged /usr's link.
install -d "$root/usr/lib/modules" "$root/boot"
cp -a "$work/kernel/lib/modules/$kver" "$root/usr/lib/modules/"
cp -a "$work/kernel/boot/." "$root/boot/"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
fetch busybox-static "$(newest busybox-static)"
dpkg-deb -x "$work/busybox-static.deb" "$work/busybox"

# The simulators, from Debian's linux-source of the kernel's version (i2c-stub.c,
# gpio-sim.c, and irq_sim.c, which gpio-sim needs and the kernel does not build), checked
# against the package index debootstrap verified; compiled with the headers of the same
# version and the host's kbuild tools (linux-kbuild-6.1 for amd64, through apt).
echo "build-image: the bus simulators for $kver"
kabi=${kver%-arm64}
fetch linux-source-6.1 "$kpkgver"
fetch "linux-headers-$kver" "$kpkgver"
fetch "linux-headers-$kabi-common" "$kpkgver"
kbuild() { (cd "$work" && apt-get download -q "linux-kbuild-6.1=$kpkgver" >/dev/null 2>&1); }
kbuild || { apt-get update -qq && kbuild; } || {
	echo "build-image: apt-get download linux-kbuild-6.1=$kpkgver failed" >&2
	exit 1
}
sys="$work/headers"
for d in "$work/linux-headers-$kver.deb" "$work/linux-headers-$kabi-common.deb" "$work"/linux-kbuild-6.1_*.deb; do
	dpkg-deb -x "$d" "$sys"
done
# The headers include their common part by absolute path.
sed -i "s|/usr/src/|$(cd "$sys" && pwd)/usr/src/|g" "$sys/usr/src/linux-headers-$kver/Makefile"
src=linux-source-6.1
dpkg-deb --fsys-tarfile "$work/linux-source-6.1.deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
	tar -xJ -C "$work" $src/drivers/i2c/i2c-stub.c $src/drivers/gpio/gpio-sim.c \
		$src/drivers/gpio/gpiolib.h $src/kernel/irq/irq_sim.c
rm "$work"/*.deb
mods="$work/modules"
mkdir -p "$mods"
cp board/guest/modules/Kbuild "$mods/"
cp "$work/$src/drivers/i2c/i2c-stub.c" "$work/$src/drivers/gpio/gpiolib.h" "$work/$src/kernel/irq/irq_sim.c" "$mods/"
cp "$work/$src/drivers/gpio/gpio-sim.c" "$mods/gpio-sim-main.c"
# irq_to_desc is not exported to modules; generic_handle_irq is, and does the same here
# (the handler irq_sim sets is handle_simple_irq).
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$mods/irq_sim.c"
grep -q 'generic_handle_irq(irqnum);' "$mods/irq_sim.c"
make -s -C "$sys/usr/src/linux-headers-$kver" M="$(cd "$mods" && pwd)" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules \
	>"$work/modules.log" 2>&1 || {
	tail -20 "$work/modules.log" >&2
	exit 1
}
install -d "$root/lib/modules/$kver/updates"
aarch64-linux-gnu-strip --strip-debug -o "$root/lib/modules/$kver/updates/i2c-stub.ko" "$mods/i2c-stub.ko"
aarch64-linux-gnu-strip --strip-debug -o "$root/lib/modules/$kver/updates/gpio-sim.ko" "$mods/gpio-sim.ko"
rm -rf "$sys" "$work/$src"

# Root logs in with this key; the harness pins the host key the first boot generates.
[ -f "$CACHE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C edgegate-board -f "$CACHE/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$CACHE/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
install -m 0755 board/guest/stage2 "$root/board-stage2"
# dpkg's fsyncs are for power cuts; the first boot has none to fear (stage2 removes this).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/board-build"

echo "build-image: initramfs for $kver"
"$GO" run ./board/initramfs -o "$work/initrd.img" -busybox "$work/busybox/bin/busybox" \
	-init board/guest/init -moddir "$work/kernel/lib/modules/$kver" \
	virtio_pci virtio_blk crc32c_generic ext4

echo "build-image: root file system image"
mkfs.ext4 -q -F -L board -d "$root" "$work/disk.img" 4G
rm -rf "$root"

echo "build-image: first boot (debootstrap's second stage) under TCG"
boot=$(date +%s)
timeout 3600 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
	-display none -monitor none -serial "file:$work/stage2.log" -no-reboot \
	-kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
	-append "root=/dev/vda rw console=ttyAMA0 init=/board-stage2 panic=-1" \
	-drive "if=none,id=hd,file=$work/disk.img,format=raw,cache=unsafe" -device virtio-blk-pci,drive=hd \
	-device virtio-rng-pci -nic none || true
if ! grep -q "board-stage2: ok" "$work/stage2.log"; then
	echo "build-image: the first boot failed; the end of $work/stage2.log:" >&2
	tail -30 "$work/stage2.log" >&2
	exit 1
fi
grep "board-stage2:" "$work/stage2.log" | tr -d '\r'

mv "$work/vmlinuz" "$work/initrd.img" "$CACHE/"
mv "$work/disk.img" "$CACHE/base.img"
echo "$key" >"$CACHE/key"
end=$(date +%s)
echo "build-image: built $CACHE/base.img in $((end - start)) s (first boot $((end - boot)) s)"
