#!/bin/sh
# edgegate postrm: purge removes the buffer (unsent data with it) and the config; the user
# stays, as Debian does for system users, so file ownership stays meaningful.
set -e
if [ "$1" = "purge" ]; then
	rm -rf /var/lib/edgegate
	rm -rf /etc/edgegate
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
