# flowlogd %postun ($1: 0 on erase, 1 on upgrade), as
# %systemd_postun_with_restart. An erase removes the daemon's state but
# never /var/log/flowlogd (not in the package). The system user stays:
# files may still belong to it.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ] && [ -d /run/systemd/system ]; then
    systemctl try-restart flowlogd.service >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
    rm -rf /var/lib/flowlogd
fi
exit 0
