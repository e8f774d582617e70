# flowlogd %preun ($1: 0 on erase, 1 on upgrade), as %systemd_preun.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now flowlogd.service >/dev/null 2>&1 || :
fi
# The daemon leaves its nftables table inet flowlogd in place when it stops,
# so that a restart (an upgrade's too) loses nothing; an erase takes it out,
# while the binary is still installed and once the daemon has stopped.
if [ "$1" -eq 0 ] && [ -x /usr/sbin/flowlogd ]; then
    /usr/sbin/flowlogd remove-tracking-table >/dev/null || :
fi
exit 0
