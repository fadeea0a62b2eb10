#!/bin/sh
# edgegate prerm: stop the service before its files go (it flushes and closes the buffer).
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl stop edgegate.service || true
	systemctl disable edgegate.service || true
fi
exit 0
