#!/bin/sh
# edgegate postinst: create the edgegate user, let it read the config, reload systemd.
# A first install does not start the service: edit the config, then enable it. An upgrade
# restarts a running service.
set -e
if [ "$1" = "configure" ]; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers edgegate.conf
	elif ! getent passwd edgegate >/dev/null; then
		adduser --system --group --home /var/lib/edgegate --no-create-home --shell /usr/sbin/nologin edgegate
		for g in i2c gpio; do getent group "$g" >/dev/null || addgroup --system "$g"; adduser edgegate "$g"; done
	fi
	# The groups exist now: give them the buses' device files (60-edgegate.rules). udevd
	# may have read the rule at unpack, before the groups existed (it then drops GROUP=),
	# and a reload only re-reads rule files whose time changed (systemd 252): touch it.
	if [ -d /run/udev ] && command -v udevadm >/dev/null 2>&1; then
		touch /usr/lib/udev/rules.d/60-edgegate.rules || true
		udevadm control --reload-rules || true
		udevadm trigger --action=change --subsystem-match=i2c-dev --subsystem-match=gpio || true
		udevadm settle --timeout=10 || true
	fi
	if [ -z "$2" ]; then
		# First install: the config holds no secrets by design, but keep it from other users.
		chgrp edgegate /etc/edgegate/edgegate.yaml && chmod 0640 /etc/edgegate/edgegate.yaml
		echo "edgegate: edit /etc/edgegate/edgegate.yaml, then: systemctl enable --now edgegate"
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		if [ -n "$2" ]; then
			systemctl try-restart edgegate.service || true
		fi
	fi
fi
exit 0
