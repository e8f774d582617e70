# flowlogd %preun ($1: 0 on erase, 1 on upgrade), as %systemd_preun.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now flowlogd.service >/dev/null 2>&1 || :
fi
exit 0
