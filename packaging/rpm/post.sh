# flowlogd %post ($1: 1 on install, 2 on upgrade).
CONFIG=/etc/flowlogd.toml
# The config exactly as shipped, to tell an untouched /etc/flowlogd.toml.
SHIPPED_CONFIG=/usr/share/flowlogd/flowlogd.toml

# The state and log directories are made here, not listed in the package:
# an erase removes the state (%postun) but never /var/log/flowlogd (flow
# logs are records an operator may still need). Existing directories are
# left as the admin has them; systemd's StateDirectory=/LogsDirectory= fix
# their owner at every start anyway.
for dir in /var/lib/flowlogd /var/log/flowlogd; do
    if [ ! -d "$dir" ]; then
        install -d -o flowlogd -g flowlogd -m 0750 "$dir"
    fi
done

# The interface of the IPv4 default route with the lowest metric, else of
# the IPv6 one; empty if there is none. Reads /proc: no iproute needed.
default_route_interface() {
    best=""
    best_metric=""
    if [ -r /proc/net/route ]; then
        while read -r ifc dst _gw flags _ref _use metric mask _rest; do
            [ "$dst" = 00000000 ] && [ "$mask" = 00000000 ] || continue
            [ $((0x$flags & 1)) -eq 1 ] || continue # RTF_UP
            if [ -z "$best" ] || [ "$metric" -lt "$best_metric" ]; then
                best=$ifc
                best_metric=$metric
            fi
        done </proc/net/route
    fi
    if [ -z "$best" ] && [ -r /proc/net/ipv6_route ]; then
        while read -r dst plen _src _slen _nh metric _ref _use flags ifc; do
            [ "$dst" = 00000000000000000000000000000000 ] && [ "$plen" = 00 ] || continue
            [ "$ifc" != lo ] || continue
            [ $((0x$flags & 0x0200)) -eq 0 ] || continue # RTF_REJECT
            if [ -z "$best" ] || [ $((0x$metric)) -lt "$best_metric" ]; then
                best=$ifc
                best_metric=$((0x$metric))
            fi
        done </proc/net/ipv6_route
    fi
    printf '%s' "$best"
}

# On the first install only, and only while /etc/flowlogd.toml is exactly
# the shipped file, point the [[eni]] at the default-route interface (the
# shipped file says "eth0").
if [ "$1" -eq 1 ] && [ -f "$CONFIG" ] && [ -f "$SHIPPED_CONFIG" ] &&
    [ "$(cat "$CONFIG")" = "$(cat "$SHIPPED_CONFIG")" ]; then
    iface=$(default_route_interface)
    case "$iface" in
    "")
        echo "flowlogd: no default route: $CONFIG keeps interface = \"eth0\"; set [[eni]] interface to this VM's interface" >&2
        ;;
    eth0) ;;
    *[!A-Za-z0-9_.-]*)
        echo "flowlogd: default-route interface \"$iface\" left out of $CONFIG (unusual name); set [[eni]] interface" >&2
        ;;
    *)
        sed -i "s/^interface = \"eth0\"\$/interface = \"$iface\"/" "$CONFIG"
        echo "flowlogd: $CONFIG: set interface = \"$iface\" (the default-route interface)"
        ;;
    esac
fi

# As %systemd_post, but enabled on the first install (not started: the
# operator fills in the ENI, VSwitch and VPC ids first).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable flowlogd.service >/dev/null 2>&1 || :
fi
exit 0
