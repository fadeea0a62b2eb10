#!/bin/sh
# edgegate postrm: remove keeps the buffer, the config and the user; purge removes them
# all, unsent data with the buffer. The groups i2c and gpio stay: other software uses them.
set -e
if [ "$1" = "purge" ]; then
	rm -rf /var/lib/edgegate
	rm -rf /etc/edgegate
	if getent passwd edgegate >/dev/null && command -v userdel >/dev/null 2>&1; then
		userdel edgegate || true
	fi
	if getent group edgegate >/dev/null && command -v groupdel >/dev/null 2>&1; then
		groupdel edgegate || true
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
