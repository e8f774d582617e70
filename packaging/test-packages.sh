#!/usr/bin/env bash
# Builds flowlogd's .deb and .rpm (packaging/build-packages.sh) and checks
# them:
#
#     bash packaging/test-packages.sh
#
# - both packages: file lists, modes, owners, conffiles / %config(noreplace),
#   dependencies, maintainer scripts, no build-time paths in the binaries,
#   the unit's hardening (systemd-analyze security --offline: exposure at
#   most 2.5), man pages; lintian on the .deb (no E:, warnings
#   listed);
# - as root: installs the .deb into a clean Debian root (debootstrap
#   minbase, cached in target/pkg-test/), inside a network namespace whose
#   default route goes out of an interface named ens5, and checks the
#   user, directories, enabled unit, the postinst's interface, check-config,
#   plugins, `systemd-analyze verify`, the daemon recording real traffic as
#   user flowlogd with only CAP_NET_ADMIN, SIGHUP, logrotate, the tracking
#   table left in place at exit and kept by an upgrade, an upgrade that
#   keeps the edited conffile, and purge (which removes the table); installs
#   the .rpm with `rpm --root` into an empty directory (--noscripts: no
#   shell there) and, scriptlets included, into a copy of the Debian root,
#   then erases it (which removes the table). Maintainer scripts that touch
#   the table run in the test's namespace, never the host's.
#
# The install tests need root (debootstrap, chroot, network namespaces):
# without root they are skipped with a message, under CI=true they fail.
# Every network namespace, mount and process made here is removed by its
# exact name, path or pid at exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
t_start=$SECONDS

readonly suite=bookworm
pkgtest=$root/target/pkg-test
cache=$pkgtest/$suite-minbase
out=$pkgtest/out
# Besides the .deb's own Depends, the Debian root gets: systemd
# (systemd-analyze verify against the installed files; deb-systemd-helper
# is in minbase already), procps (/bin/kill, the unit's ExecReload) and
# logrotate (to run the logrotate snippet).
root_packages=(systemd procps logrotate)
ns_vm=flpkg-vm-$$
ns_peer=flpkg-peer-$$
vm_if=ens5
vm_addr=192.0.2.1
peer_addr=192.0.2.2

passed=0
failed=0
ok() {
    passed=$((passed + 1))
    echo "ok   $*"
}
not_ok() {
    failed=$((failed + 1))
    echo "FAIL $*"
}
# check DESCRIPTION COMMAND...: one counted check.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}
# has FILE ERE: FILE has a line matching ERE.
has() { grep -Eq -- "$2" "$1"; }
lacks() { ! grep -Eq -- "$2" "$1"; }
same_lines() {
    if diff -u "$1" "$2" >"$out/diff" 2>&1; then return 0; fi
    sed 's/^/     /' "$out/diff"
    return 1
}
elapsed() { echo "$((SECONDS - $1)) s"; }
quiet() { "$@" >/dev/null 2>&1; }

# --- cleanup: by exact pid, mount point and namespace name ------------------
daemon_pid=""
debootstrap_pid=""
mounts_under() {
    # Mount points below $1, deepest first (octal escapes as in /proc/mounts).
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r
}
unmount_all_under() {
    local m
    for _ in 1 2 3; do
        [[ -n $(mounts_under "$1") ]] || return 0
        for m in $(mounts_under "$1"); do
            umount "$m" || umount -l "$m" || true
        done
    done
}
# Removes a directory this script made, never while something is mounted
# below it.
remove_tree() {
    [[ -e $1 ]] || return 0
    unmount_all_under "$1"
    if [[ -n $(mounts_under "$1") ]]; then
        echo "test-packages: refusing to remove $1: still mounted: $(mounts_under "$1")" >&2
        return 1
    fi
    rm -rf --one-file-system "$1"
}
cleanup() {
    local rc=$?
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    if [[ -n $debootstrap_pid ]] && kill -0 "$debootstrap_pid" 2>/dev/null; then
        kill -TERM "$debootstrap_pid" 2>/dev/null || true
        wait "$debootstrap_pid" 2>/dev/null || true
    fi
    if [[ -d $pkgtest ]]; then
        unmount_all_under "$pkgtest"
    fi
    for ns in "$ns_vm" "$ns_peer"; do
        if [[ -e /run/netns/$ns ]]; then
            ip netns delete "$ns" || true
        fi
    done
    exit "$rc"
}
trap cleanup EXIT

# --- preconditions -----------------------------------------------------------
privileged=true
if [[ $EUID -ne 0 ]]; then
    if [[ ${CI:-} == true ]]; then
        echo "test-packages: the install tests need root (debootstrap, chroot, network namespaces)" >&2
        exit 1
    fi
    echo "test-packages: not root: SKIPPING the install tests (debootstrap, chroot, network namespaces); run as root for them"
    privileged=false
fi
tools=(dpkg-deb lintian rpm readelf strings man gzip systemd-analyze)
$privileged && tools+=(debootstrap ip ping chroot timeout)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "test-packages: $tool is missing: run bash scripts/install-test-deps.sh" >&2
        exit 1
    }
done
mkdir -p "$pkgtest" "$out"

# The mirror apt uses here: deb822 .sources first, then one-line .list files.
apt_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = enabled = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = $i
                    if ($i ~ /^URIs:/) uris = $i
                    if ($i ~ /^Suites:/) suites = $i
                    if ($i ~ /^Enabled:/) enabled = $i
                }
                if (enabled ~ /no/) next
                if (types ~ /[ \t]deb([ \t]|$)/ && suites ~ ("[ \t]" suite "([ \t]|$)")) {
                    sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")
        [[ -n $uri ]] && {
            echo "$uri"
            return
        }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        uri=$(awk -v suite="$suite" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")
        [[ -n $uri ]] && {
            echo "$uri"
            return
        }
    done
    echo "http://deb.debian.org/debian"
}

# --- the Debian root: debootstrap in the background while cargo builds ------
if $privileged && [[ ! -f $cache/.flowlogd-cache-complete ]]; then
    mirror=$(apt_mirror)
    remove_tree "$cache"
    remove_tree "$cache.new"
    echo "test-packages: debootstrap --variant=minbase $suite from $mirror (log: $pkgtest/debootstrap.log)"
    timeout 900 debootstrap --variant=minbase "$suite" "$cache.new" "$mirror" >"$pkgtest/debootstrap.log" 2>&1 &
    debootstrap_pid=$!
fi

# --- build -------------------------------------------------------------------
t_build=$SECONDS
timeout 2700 bash packaging/build-packages.sh
echo "test-packages: build-packages.sh took $(elapsed "$t_build")"

shopt -s nullglob
debs=(target/packages/flowlogd_*.deb)
rpms=(target/packages/flowlogd-*.rpm)
shopt -u nullglob
check "one .deb and one .rpm in target/packages/" test "${#debs[@]}" -eq 1 -a "${#rpms[@]}" -eq 1
deb=$root/${debs[0]}
rpm_file=$root/${rpms[0]}

# The plugins every package must carry: one per sinks/*/Cargo.toml.
plugins=()
for manifest in sinks/*/Cargo.toml; do
    crate=$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
    plugins+=("${crate#flowlogd-sink-}")
done
echo "test-packages: expected plugins: ${plugins[*]}"

# Regular files of both packages, `mode path` (.deb paths; the .rpm's unit
# is under /usr/lib/systemd/system, and the .deb's copyright and changelog
# are Debian's).
{
    echo "-rwxr-xr-x /usr/sbin/flowlogd"
    for p in "${plugins[@]}"; do
        echo "-rw-r--r-- /usr/lib/flowlogd/sinks/$p.so"
    done
    for f in /etc/flowlogd.toml /etc/flowlogd/security-group.nft /etc/flowlogd/security-group.iptables \
        /etc/logrotate.d/flowlogd /lib/systemd/system/flowlogd.service /usr/lib/sysctl.d/60-flowlogd.conf \
        /usr/lib/modules-load.d/flowlogd.conf /usr/share/man/man8/flowlogd.8.gz \
        /usr/share/man/man5/flowlogd.toml.5.gz /usr/share/flowlogd/flowlogd.toml \
        /usr/share/doc/flowlogd/README.md /usr/share/doc/flowlogd/plugin-api/include/flowlogd_sink.h \
        /usr/share/doc/flowlogd/examples/sink-c/Makefile /usr/share/doc/flowlogd/examples/sink-c/csv_sink.c \
        /usr/share/doc/flowlogd/examples/sink-rust/Cargo.toml \
        /usr/share/doc/flowlogd/examples/sink-rust/src/lib.rs; do
        echo "-rw-r--r-- $f"
    done
} >"$out/expected-common"
config_files=(/etc/flowlogd.toml /etc/flowlogd/security-group.iptables /etc/flowlogd/security-group.nft /etc/logrotate.d/flowlogd)
printf '%s\n' "${config_files[@]}" | sort >"$out/expected-conffiles"

# ============================================================================
echo "== .deb: $deb"
dpkg-deb -c "$deb" >"$out/deb-contents"
awk '$1 !~ /^d/ { p = $6; sub(/^\./, "", p); print $1, p }' "$out/deb-contents" | sort -k2 >"$out/deb-files"
{
    cat "$out/expected-common"
    echo "-rw-r--r-- /usr/share/doc/flowlogd/copyright"
    echo "-rw-r--r-- /usr/share/doc/flowlogd/changelog.Debian.gz"
} | sort -k2 >"$out/deb-expected"
check "deb: exactly the expected files, with the expected modes" same_lines "$out/deb-expected" "$out/deb-files"
check "deb: every entry owned by root:root" test -z "$(awk '$2 != "0/0" && $2 != "root/root"' "$out/deb-contents")"
check "deb: directories are 0755" test -z "$(awk '$1 ~ /^d/ && $1 != "drwxr-xr-x"' "$out/deb-contents")"
for p in "${plugins[@]}"; do
    check "deb: plugin $p as /usr/lib/flowlogd/sinks/$p.so, 0644" has "$out/deb-files" "^-rw-r--r-- /usr/lib/flowlogd/sinks/$p\\.so$"
done

dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | sort >"$out/deb-conffiles"
check "deb: conffiles are the four /etc files" same_lines "$out/expected-conffiles" "$out/deb-conffiles"
dpkg-deb -I "$deb" >"$out/deb-info"
depends=$(dpkg-deb -f "$deb" Depends)
echo "     Depends: $depends"
check "deb: Depends is libc6 and nftables only" test -n "$(echo "$depends" | grep -E '^libc6 \(>= [0-9.]+\), nftables$')"
for field in Package:flowlogd Section:net Priority:optional Architecture:"$(dpkg --print-architecture)"; do
    check "deb: ${field%%:*}: ${field#*:}" test "$(dpkg-deb -f "$deb" "${field%%:*}")" = "${field#*:}"
done
check "deb: Maintainer and a multi-line Description" test -n "$(dpkg-deb -f "$deb" Maintainer)" -a \
    "$(dpkg-deb -f "$deb" Description | wc -l)" -gt 3
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$out/deb-control-list"
check "deb: postinst, prerm, postrm are executable" test "$(grep -Ec '^-rwxr-xr-x .* \./(postinst|prerm|postrm)$' "$out/deb-control-list")" -eq 3
mkdir -p "$out/deb-control"
dpkg-deb -e "$deb" "$out/deb-control"
check "deb postinst: creates the system user" has "$out/deb-control/postinst" 'useradd --system'
check "deb postinst: enables the unit (deb-systemd-helper)" has "$out/deb-control/postinst" 'deb-systemd-helper enable flowlogd.service'
check "deb postinst: reloads systemd" has "$out/deb-control/postinst" 'systemctl --system daemon-reload'
check "deb postrm: purge removes /var/lib/flowlogd" has "$out/deb-control/postrm" '^ *rm -rf /var/lib/flowlogd$'
check "deb postrm: never removes /var/log/flowlogd" lacks "$out/deb-control/postrm" 'rm .*/var/log'
check "deb prerm: removal removes the tracking table" has "$out/deb-control/prerm" '^ *if \[ "\$1" = remove \] && \[ -x /usr/sbin/flowlogd \]; then$'
check "deb prerm: runs flowlogd remove-tracking-table" has "$out/deb-control/prerm" '^ */usr/sbin/flowlogd remove-tracking-table '
scripts_parse() { sh -n "$out/deb-control/postinst" && sh -n "$out/deb-control/prerm" && sh -n "$out/deb-control/postrm"; }
check "deb maintainer scripts parse (sh -n)" scripts_parse

# The payload, for the files' contents.
x=$out/deb-x
rm -rf "$x"
dpkg-deb -x "$deb" "$x"
check "deb: /etc/flowlogd.toml is etc/flowlogd.toml" cmp -s "$x/etc/flowlogd.toml" etc/flowlogd.toml
check "deb: /usr/share/flowlogd/flowlogd.toml is etc/flowlogd.toml" cmp -s "$x/usr/share/flowlogd/flowlogd.toml" etc/flowlogd.toml
check "deb: the copyright file names Apache-2.0" has "$x/usr/share/doc/flowlogd/copyright" 'Apache-2\.0'

# No build-time paths: the checkout, cargo's and rustup's homes.
leaks=("$root" "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}" "/root/" "/work/")
elfs=("$x/usr/sbin/flowlogd")
for p in "${plugins[@]}"; do elfs+=("$x/usr/lib/flowlogd/sinks/$p.so"); done
for elf in "${elfs[@]}"; do
    name=${elf#"$x"}
    strings -a "$elf" >"$out/strings"
    found=""
    for l in "${leaks[@]}"; do
        if grep -qF -- "$l" "$out/strings"; then found+=" $l"; fi
    done
    check "deb: no build-time paths in $name" test -z "$found"
    [[ -z $found ]] || grep -F -e "$root" -e /root/ -e /work/ "$out/strings" | head -n 3 | sed 's/^/     /'
    readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' >"$out/needed"
    check "deb: $name links only libc (and libgcc_s, the unwinder)" \
        test -z "$(grep -Ev '^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2)$' "$out/needed")"
done
for p in "${plugins[@]}"; do
    check "deb: $p.so exports flowlogd_sink_descriptor" \
        has <(readelf --dyn-syms -W "$x/usr/lib/flowlogd/sinks/$p.so") ' flowlogd_sink_descriptor$'
done

unit=$x/lib/systemd/system/flowlogd.service
for line in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=60s' \
    'User=flowlogd' 'Group=flowlogd' 'ExecStart=/usr/sbin/flowlogd run --config /etc/flowlogd\.toml' \
    'ExecStartPre=/usr/sbin/flowlogd check-config --config /etc/flowlogd\.toml' 'ExecReload=/bin/kill -HUP \$MAINPID' \
    'Restart=on-failure' 'CapabilityBoundingSet=CAP_NET_ADMIN' 'AmbientCapabilities=CAP_NET_ADMIN' \
    'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'ReadWritePaths=/var/lib/flowlogd /var/log/flowlogd' 'WantedBy=multi-user.target' \
    'ProtectKernelTunables=yes' 'ReadWritePaths=-/proc/sys/net/netfilter' 'PrivateDevices=yes' \
    'ProtectProc=invisible' 'RestrictNamespaces=yes' 'MemoryDenyWriteExecute=yes' 'RemoveIPC=yes' \
    'SystemCallFilter=@system-service' 'SystemCallErrorNumber=EPERM'; do
    check "unit: $line" has "$unit" "^$line\$"
done
# systemd-analyze's exposure score, 0 (locked down) to 10; --threshold is in
# tenths. Offline: the unit file alone, no running manager needed.
systemd-analyze security --offline=yes --threshold=25 "$unit" >"$out/unit-security" 2>&1 && rc=0 || rc=$?
echo "     $(grep -o 'Overall exposure level.*' "$out/unit-security" || echo 'systemd-analyze security: no score')"
check "unit: systemd-analyze security --offline exposure at most 2.5" test "$rc" -eq 0
[[ $rc -eq 0 ]] || grep '✗' "$out/unit-security" | sed 's/^/     /'
for key in nf_conntrack_acct nf_conntrack_timestamp nf_conntrack_events; do
    check "sysctl.d: net.netfilter.$key = 1" has "$x/usr/lib/sysctl.d/60-flowlogd.conf" "^net\\.netfilter\\.$key = 1$"
done
check "modules-load.d: nf_conntrack" has "$x/usr/lib/modules-load.d/flowlogd.conf" '^nf_conntrack$'
check "logrotate: /var/log/flowlogd/*.log" has "$x/etc/logrotate.d/flowlogd" '^/var/log/flowlogd/\*\.log \{$'
check "logrotate: postrotate sends SIGUSR1" has "$x/etc/logrotate.d/flowlogd" 'systemctl kill .*--signal=USR1 flowlogd\.service'
for page in man8/flowlogd.8.gz man5/flowlogd.toml.5.gz; do
    f=$x/usr/share/man/$page
    warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null || echo "man failed")
    check "man page $page: gzip ok, renders without warnings" test -z "$warnings" -a "$(gzip -t "$f" && echo ok)" = ok
    [[ -z $warnings ]] || echo "$warnings" | sed 's/^/     /'
done

lintian "$deb" >"$out/lintian" 2>&1 || true
check "lintian: no errors" lacks "$out/lintian" '^E: '
if grep -q '^W: ' "$out/lintian"; then
    echo "     lintian warnings (allowed):"
    grep '^W: ' "$out/lintian" | sed 's/^/       /'
fi
grep '^E: ' "$out/lintian" | sed 's/^/     /' || true

# ============================================================================
echo "== .rpm: $rpm_file"
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm_file" 2>/dev/null | sort -k2 >"$out/rpm-files"
sed 's|^\(.*\) /lib/systemd/system/|\1 /usr/lib/systemd/system/|' "$out/expected-common" | sort -k2 >"$out/rpm-expected"
check "rpm: exactly the expected files, with the expected modes" same_lines "$out/rpm-expected" "$out/rpm-files"
rpm -qlp "$rpm_file" 2>/dev/null >"$out/rpm-list"
check "rpm -qlp lists what the file modes listed" test "$(wc -l <"$out/rpm-list")" -eq "$(wc -l <"$out/rpm-files")"
rpm -qp --qf '[%{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm_file" 2>/dev/null >"$out/rpm-owners"
check "rpm: every file owned by root:root" test -z "$(grep -v '^root:root ' "$out/rpm-owners")"
rpm -qp --configfiles "$rpm_file" 2>/dev/null | sort >"$out/rpm-configfiles"
check "rpm: %config files are the four /etc files" same_lines "$out/expected-conffiles" "$out/rpm-configfiles"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" 2>/dev/null >"$out/rpm-flags"
for f in "${config_files[@]}"; do
    check "rpm: $f is %config(noreplace)" has "$out/rpm-flags" "^cn $f\$"
done
rpm -qp --requires "$rpm_file" 2>/dev/null >"$out/rpm-requires"
sed 's/^/     requires: /' "$out/rpm-requires"
check "rpm: requires nftables and libc" test -n "$(grep -x nftables "$out/rpm-requires")" -a -n "$(grep -F 'libc.so.6()(64bit)' "$out/rpm-requires")"
check "rpm: requires nothing but libc, the unwinder, nftables and /bin/sh" test -z "$(grep -Ev \
    '^(/bin/sh|nftables|libc\.so\.6.*|libm\.so\.6.*|libgcc_s\.so\.1.*|ld-linux-x86-64\.so\.2.*|rtld\(GNU_HASH\)|rpmlib\(.*|config\(flowlogd\).*)$' \
    "$out/rpm-requires")"
rpm -qp --scripts "$rpm_file" 2>/dev/null >"$out/rpm-scripts"
check "rpm %pre: creates the system user" has "$out/rpm-scripts" 'useradd --system'
check "rpm %post: creates /var/lib/flowlogd and /var/log/flowlogd" has "$out/rpm-scripts" 'for dir in /var/lib/flowlogd /var/log/flowlogd'
check "rpm %post: enables the unit" has "$out/rpm-scripts" 'systemctl --no-reload enable flowlogd\.service'
check "rpm %preun: stops and disables on erase" has "$out/rpm-scripts" 'disable --now flowlogd\.service'
check "rpm %preun: erase removes the tracking table" has "$out/rpm-scripts" '^ */usr/sbin/flowlogd remove-tracking-table '
check "rpm %postun: erase removes /var/lib/flowlogd" has "$out/rpm-scripts" '^ *rm -rf /var/lib/flowlogd$'
check "rpm scriptlets: never remove /var/log/flowlogd" lacks "$out/rpm-scripts" 'rm .*/var/log'
rpm -qip "$rpm_file" 2>/dev/null >"$out/rpm-info"
check "rpm: License Apache-2.0" has "$out/rpm-info" '^License *: Apache-2\.0$'
check "rpm: Summary" has "$out/rpm-info" '^Summary *: .*flow logs'

# ============================================================================
if ! $privileged; then
    echo "test-packages: skipped the install tests (not root)"
    echo "test-packages: took $(elapsed "$t_start")"
    echo "packages: $passed passed, $failed failed"
    ((failed == 0))
    exit
fi

# --- the cached Debian root ---------------------------------------------------
t_root=$SECONDS
if [[ -n $debootstrap_pid ]]; then
    echo "test-packages: waiting for debootstrap"
    if ! wait "$debootstrap_pid"; then
        debootstrap_pid=""
        tail -n 20 "$pkgtest/debootstrap.log" >&2
        echo "test-packages: debootstrap failed (log: $pkgtest/debootstrap.log)" >&2
        exit 1
    fi
    debootstrap_pid=""
    unmount_all_under "$cache.new"
    # No service starts from maintainer scripts in a chroot.
    printf '#!/bin/sh\nexit 101\n' >"$cache.new/usr/sbin/policy-rc.d"
    chmod 0755 "$cache.new/usr/sbin/policy-rc.d"
    touch "$cache.new/.flowlogd-cache-complete"
    mv "$cache.new" "$cache"
fi
# Packages the root needs: the .deb's Depends and the test's own.
needed=("${root_packages[@]}")
IFS=',' read -ra deps <<<"$depends"
for d in "${deps[@]}"; do
    d=${d%%(*}
    d=${d// /}
    needed+=("${d%%|*}")
done
missing=()
for p in "${needed[@]}"; do
    status=$(chroot "$cache" dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "test-packages: installing into the Debian root: ${missing[*]}"
    mount -t proc proc "$cache/proc"
    timeout 600 chroot "$cache" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 chroot "$cache" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"$pkgtest/apt.log" 2>&1 || {
        tail -n 20 "$pkgtest/apt.log" >&2
        exit 1
    }
    chroot "$cache" apt-get clean
    umount "$cache/proc"
fi
echo "test-packages: Debian root ready in $(elapsed "$t_root")"

# A fresh copy of the cached root, with /proc (the postinst reads the
# routes there, the daemon its sysctls).
new_root() {
    remove_tree "$1"
    cp -a "$cache" "$1"
    mount -t proc proc "$1/proc"
}
in_vm() { ip netns exec "$ns_vm" "$@"; }
# What the unit grants: user flowlogd, CAP_NET_ADMIN ambient and in the
# bounding set, nothing else, no new privileges (setpriv of the root).
# shellcheck disable=SC2054 # the commas belong to setpriv's capability lists
as_service_user=(setpriv --reuid=flowlogd --regid=flowlogd --init-groups --inh-caps=-all,+net_admin
    --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin --no-new-privs)
owner_mode() { chroot "$1" stat -c '%U:%G %a' "$2" 2>/dev/null; }
# wait_for FILE ERE SECONDS
wait_for() {
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        grep -Eq -- "$2" "$1" && return 0
        sleep 0.2
    done
    return 1
}

# The "VM": a namespace whose default route leaves through $vm_if (not
# eth0), and a peer to send traffic to.
ip netns add "$ns_vm"
ip netns add "$ns_peer"
ip link add "$vm_if" netns "$ns_vm" type veth peer name peer0 netns "$ns_peer"
ip -n "$ns_vm" addr add "$vm_addr/24" dev "$vm_if"
ip -n "$ns_peer" addr add "$peer_addr/24" dev peer0
for ns in "$ns_vm" "$ns_peer"; do ip -n "$ns" link set lo up; done
ip -n "$ns_vm" link set "$vm_if" up
ip -n "$ns_peer" link set peer0 up
ip -n "$ns_vm" route add default via "$peer_addr" dev "$vm_if"

# ============================================================================
echo "== .rpm installed into an empty directory"
# rpm --root into an empty directory: no shell there for the scriptlets,
# hence --noscripts; the files land as packaged.
scratch=$pkgtest/rpm-scratch
remove_tree "$scratch"
mkdir -p "$scratch"
check "rpm --root <empty dir> -i --nodeps --noscripts" rpm --root "$scratch" -i --nodeps --noscripts "$rpm_file"
landed=true
while read -r mode path; do
    [[ -f $scratch$path ]] && [[ $(stat -c %A "$scratch$path") == "$mode" ]] || {
        echo "     missing or wrong mode: $path"
        landed=false
    }
done <"$out/rpm-expected"
check "rpm: every file landed in the scratch root with its mode" $landed
check "rpm -V in the scratch root: nothing changed" test -z "$(rpm --root "$scratch" -V --nodeps flowlogd 2>&1)"
remove_tree "$scratch"

# ============================================================================
echo "== .deb installed into a clean Debian $suite root"
r=$pkgtest/deb-root
new_root "$r"
cp "$deb" "$r/tmp/flowlogd.deb"
check "dpkg -i (in the VM namespace)" in_vm chroot "$r" dpkg -i /tmp/flowlogd.deb
check "postinst set interface = \"$vm_if\" (the default-route interface)" has "$r/etc/flowlogd.toml" "^interface = \"$vm_if\"$"
check "postinst changed nothing else in /etc/flowlogd.toml" test "$(diff "$r/etc/flowlogd.toml" etc/flowlogd.toml | grep -c '^[<>]')" -eq 2
passwd_line=$(chroot "$r" getent passwd flowlogd || true)
echo "     $passwd_line"
check "user flowlogd: a system user with no login shell" test -n "$(echo "$passwd_line" |
    awk -F: '$3 < 1000 && $6 == "/var/lib/flowlogd" && $7 ~ /nologin$/')"
check "group flowlogd exists" quiet chroot "$r" getent group flowlogd
for d in /var/lib/flowlogd /var/log/flowlogd; do
    check "$d is flowlogd:flowlogd 0750" test "$(owner_mode "$r" "$d")" = "flowlogd:flowlogd 750"
done
for p in "${plugins[@]}"; do
    check "installed $p.so is root:root 0644" test "$(owner_mode "$r" "/usr/lib/flowlogd/sinks/$p.so")" = "root:root 644"
done
check "unit enabled (multi-user.target.wants)" test -L "$r/etc/systemd/system/multi-user.target.wants/flowlogd.service"
check "dpkg knows the conffiles" test "$(chroot "$r" dpkg-query -W -f='${Conffiles}\n' flowlogd | awk 'NF { print $1 }' | sort | tr '\n' ' ')" = \
    "$(tr '\n' ' ' <"$out/expected-conffiles")"

in_vm chroot "$r" flowlogd check-config >"$out/check-config" 2>&1 && rc=0 || rc=$?
check "flowlogd check-config on the installed default config exits 0" test "$rc" -eq 0
[[ $rc -eq 0 ]] || sed 's/^/     /' "$out/check-config"
check "check-config: the ENI is interface $vm_if" has "$out/check-config" "eni-primary \\(interface $vm_if\\)"
in_vm chroot "$r" "${as_service_user[@]}" flowlogd check-config >/dev/null 2>&1 && rc=0 || rc=$?
check "check-config as user flowlogd with only CAP_NET_ADMIN (the unit's ExecStartPre) exits 0" test "$rc" -eq 0
for who in root flowlogd; do
    if [[ $who == root ]]; then
        chroot "$r" flowlogd plugins >"$out/plugins-$who" 2>&1 || true
    else
        chroot "$r" "${as_service_user[@]}" flowlogd plugins >"$out/plugins-$who" 2>&1 || true
    fi
    for p in "${plugins[@]}"; do
        check "flowlogd plugins (as $who) lists $p" has "$out/plugins-$who" "^  $p [^ ]+ \\(ABI [0-9.]+\\) /usr/lib/flowlogd/sinks/$p\\.so$"
    done
    check "flowlogd plugins (as $who) refuses none" lacks "$out/plugins-$who" '^refused:'
done

verify=$(MANPATH=$r/usr/share/man systemd-analyze verify --root="$r" /lib/systemd/system/flowlogd.service 2>&1) && rc=0 || rc=$?
check "systemd-analyze verify: accepted, no warnings" test "$rc" -eq 0 -a -z "$verify"
[[ -z $verify ]] || echo "$verify" | sed 's/^/     /'
chroot "$r" systemd-analyze security --offline=yes --threshold=25 /lib/systemd/system/flowlogd.service >"$out/installed-security" 2>&1 && rc=0 || rc=$?
echo "     installed unit: $(grep -o 'Overall exposure level.*' "$out/installed-security" || echo 'no score')"
check "installed unit: systemd-analyze security --offline exposure at most 2.5" test "$rc" -eq 0

# The daemon as the unit runs it, on real traffic: ping the peer 3 times,
# SIGHUP (reload, the window goes on), SIGTERM (close + flush).
log=$out/daemon.log
# Not through a shell function: ip, chroot and setpriv each exec the next,
# so $! is the daemon's own pid.
ip netns exec "$ns_vm" chroot "$r" "${as_service_user[@]}" /usr/sbin/flowlogd run --config /etc/flowlogd.toml >"$log" 2>&1 &
daemon_pid=$!
if wait_for "$log" 'capturing:' 15; then
    ok "daemon started as user flowlogd with only CAP_NET_ADMIN (nft table, sysctls, netlink)"
    in_vm ping -c 3 -i 0.2 -q "$peer_addr" >/dev/null
    kill -HUP "$daemon_pid" || true
    check "SIGHUP: config reloaded" wait_for "$log" 'reloaded:' 10
    kill -TERM "$daemon_pid" || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        not_ok "daemon stopped within 30 s of SIGTERM"
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    wait "$daemon_pid" && rc=0 || rc=$?
    daemon_pid=""
    check "daemon exited 0 on SIGTERM" test "$rc" -eq 0
    flow_log=$r/var/log/flowlogd/flow.log
    check "flow.log: ACCEPT out, 3 packets 252 bytes of ICMP from $vm_addr" has "$flow_log" \
        " eni-primary $vm_addr 0 $peer_addr 0 1 out 3 252 [0-9]+ [0-9]+ OK ACCEPT$"
    check "flow.log: ACCEPT in, 3 packets 252 bytes of ICMP to $vm_addr" has "$flow_log" \
        " eni-primary $peer_addr 0 $vm_addr 0 1 in 3 252 [0-9]+ [0-9]+ OK ACCEPT$"
    check "flow.log is flowlogd's, 0640" test "$(owner_mode "$r" /var/log/flowlogd/flow.log)" = "flowlogd:flowlogd 640"
    check "state handed off in /var/lib/flowlogd" test "$(owner_mode "$r" /var/lib/flowlogd/conntrack-handoff | cut -d' ' -f1)" = flowlogd:flowlogd
    check "nft table inet flowlogd left in place at exit (a restart loses nothing)" quiet in_vm nft list table inet flowlogd
else
    not_ok "daemon started as user flowlogd with only CAP_NET_ADMIN (nft table, sysctls, netlink)"
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
fi
grep -E ' (WARN|ERROR) ' "$log" | sed 's/^/     daemon: /' || true

chroot "$r" logrotate -f /etc/logrotate.d/flowlogd >"$out/logrotate" 2>&1 && rc=0 || rc=$?
check "logrotate -f /etc/logrotate.d/flowlogd rotates flow.log" test "$rc" -eq 0 -a -n "$(ls "$r"/var/log/flowlogd/flow.log-* 2>/dev/null)"

# Upgrade (same version again): the edited conffile stays, the postinst
# does not touch it.
echo '# edited by the operator' >>"$r/etc/flowlogd.toml"
cp "$r/etc/flowlogd.toml" "$out/edited.toml"
check "dpkg -i again (upgrade path)" in_vm chroot "$r" dpkg -i --force-confold /tmp/flowlogd.deb
check "upgrade kept the edited /etc/flowlogd.toml" cmp -s "$r/etc/flowlogd.toml" "$out/edited.toml"
check "upgrade kept the tracking table" quiet in_vm nft list table inet flowlogd

# In the VM namespace: the prerm removes the tracking table of the
# namespace it runs in.
check "dpkg --purge flowlogd" in_vm chroot "$r" dpkg --purge flowlogd
check "purge removed the tracking table" test -z "$(in_vm nft list tables | grep -x 'table inet flowlogd')"
check "purge removed /var/lib/flowlogd" test ! -e "$r/var/lib/flowlogd"
check "purge kept /var/log/flowlogd and its logs" test -d "$r/var/log/flowlogd" -a -n "$(ls "$r"/var/log/flowlogd/flow.log-* 2>/dev/null)"
check "purge removed /etc/flowlogd.toml, the binary and the plugins" test ! -e "$r/etc/flowlogd.toml" -a ! -e "$r/usr/sbin/flowlogd" -a ! -e "$r/usr/lib/flowlogd"
check "purge removed the unit's enablement" test ! -e "$r/etc/systemd/system/multi-user.target.wants/flowlogd.service"
remove_tree "$r"

# ============================================================================
echo "== .rpm installed with its scriptlets into a copy of the Debian root (rpm --root --nodeps)"
r=$pkgtest/rpm-root
new_root "$r"
in_vm rpm --root "$r" -i --nodeps "$rpm_file" >"$out/rpm-install" 2>&1 && rc=0 || rc=$?
check "rpm --root -i --nodeps (scriptlets run)" test "$rc" -eq 0
grep -v 'use Alien\|you know what you are doing' "$out/rpm-install" | sed 's/^/     /' || true
check "%pre created user flowlogd" quiet chroot "$r" getent passwd flowlogd
for d in /var/lib/flowlogd /var/log/flowlogd; do
    check "%post made $d flowlogd:flowlogd 0750" test "$(owner_mode "$r" "$d")" = "flowlogd:flowlogd 750"
done
check "%post set interface = \"$vm_if\"" has "$r/etc/flowlogd.toml" "^interface = \"$vm_if\"$"
check "%post enabled the unit" test -L "$r/etc/systemd/system/multi-user.target.wants/flowlogd.service"
in_vm chroot "$r" flowlogd check-config >/dev/null 2>&1 && rc=0 || rc=$?
check "flowlogd check-config exits 0 (rpm install)" test "$rc" -eq 0
chroot "$r" flowlogd plugins >"$out/plugins-rpm" 2>&1 || true
for p in "${plugins[@]}"; do
    check "flowlogd plugins lists $p (rpm install)" has "$out/plugins-rpm" "/usr/lib/flowlogd/sinks/$p\\.so$"
done
rpm --root "$r" -V --nodeps flowlogd >"$out/rpm-verify" 2>&1 || true
check "rpm -V: only /etc/flowlogd.toml changed (by %post)" test "$(grep -v ' /etc/flowlogd.toml$' "$out/rpm-verify" | wc -l)" -eq 0
# A table as the daemon leaves it; the erase (in the VM namespace) removes it.
check "tracking table in place before the erase" in_vm nft add table inet flowlogd
check "rpm --root -e flowlogd" in_vm rpm --root "$r" -e --nodeps flowlogd
check "erase removed the tracking table" test -z "$(in_vm nft list tables | grep -x 'table inet flowlogd')"
check "erase removed /var/lib/flowlogd" test ! -e "$r/var/lib/flowlogd"
check "erase kept /var/log/flowlogd" test -d "$r/var/log/flowlogd"
check "erase disabled the unit" test ! -e "$r/etc/systemd/system/multi-user.target.wants/flowlogd.service"
remove_tree "$r"

echo "test-packages: took $(elapsed "$t_start")"
echo "packages: $passed passed, $failed failed"
((failed == 0))
