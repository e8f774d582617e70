#!/usr/bin/env bash
# Builds flowlogd and runs it in the foreground on the sample config
# (etc/flowlogd.toml), adapted to this machine: the ENI is the interface of
# the default route, plugins come from the build, records go to
# target/sample/flow.log, and windows are 60 s so records show up soon.
# Needs root (CAP_NET_ADMIN for the netlink groups and the nftables table).
# Stop it with Ctrl-C: it closes the open window early and flushes. Its
# nftables table inet flowlogd stays in this namespace (so a restart loses
# nothing); `flowlogd remove-tracking-table` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "run-sample: needs root (CAP_NET_ADMIN); try: sudo bash scripts/run-sample.sh" >&2
    exit 1
fi
command -v nft >/dev/null || { apt-get update -qq && apt-get install -y -qq nftables; }

cargo build --release --locked -p flowlogd -p flowlogd-sink-file

sample="$PWD/target/sample"
mkdir -p "$sample/plugins"
install -m 0644 target/release/libflowlogd_sink_file.so "$sample/plugins/file.so"

iface=$(ip route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
iface=${iface:-$(ip -o link show | awk -F': ' '$2 != "lo" { print $2; exit }' | cut -d@ -f1)}

sed -e "s|^capture_window_secs = .*|capture_window_secs = 60|" \
    -e "s|^plugin_dir = .*|plugin_dir = \"$sample/plugins\"|" \
    -e "s|^state_dir = .*|state_dir = \"$sample/state\"|" \
    -e "s|^interface = \"eth0\"|interface = \"$iface\"|" \
    -e "s|^path = \"/var/log/flowlogd/flow.log\"|path = \"$sample/flow.log\"|" \
    etc/flowlogd.toml >"$sample/flowlogd.toml"

echo "run-sample: ENI interface $iface; records in $sample/flow.log"
echo "run-sample: after Ctrl-C, remove the tracking table with: target/release/flowlogd remove-tracking-table --config $sample/flowlogd.toml"
target/release/flowlogd check-config --config "$sample/flowlogd.toml"
exec target/release/flowlogd run --config "$sample/flowlogd.toml"
