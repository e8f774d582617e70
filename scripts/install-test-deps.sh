#!/usr/bin/env bash
# Installs what flowlogd's tests need on a Debian machine (run as root):
# the C compiler for the C example plugin, iproute2 for network namespaces,
# nftables/iptables and conntrack-tools to set up and cross-check capture,
# rsyslog as the real syslog consumer, prometheus (with promtool) to
# check and scrape the metrics endpoint, and nfdump (nfcapd) and pmacct
# (nfacctd) as the real IPFIX collectors.
set -euo pipefail

packages=(gcc libc6-dev make iproute2 iputils-ping nftables iptables conntrack kmod procps rsyslog prometheus ulogd2 ulogd2-json lintian rpm debootstrap debian-archive-keyring systemd dpkg-dev binutils man-db nfdump pmacct)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The official Alibaba Cloud Log Service SDK (PyPI) and the lz4 it uses:
# tests/fixtures/logservice_endpoint.py verifies with them what the
# logservice sink sends.
if ! python3 -c 'import aliyun.log.auth, aliyun.log.log_logs_pb2, lz4.block' 2>/dev/null; then
    echo "installing: aliyun-log-python-sdk lz4 (pip)"
    python3 -m pip install --quiet aliyun-log-python-sdk lz4
fi

# The test command checks formatting and lints before it builds the tests.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "installing: rustfmt clippy (rustup)"
    rustup component add rustfmt clippy
fi
