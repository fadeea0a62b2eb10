// Package board checks edgegate on an emulated arm64 board: Debian 12 under
// qemu-system-aarch64 (TCG), systemd as PID 1, the .deb from `make dist` installed with
// apt and run by systemd as packaged. `make test-board` builds the image
// (board/build-image.sh) and runs TestBoard; see README.md, "Running on a board".
package board
