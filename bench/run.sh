#!/usr/bin/env bash
# flowlogd's benchmark, side by side with ulogd2 on identical traffic.
#
# Two network namespaces joined by a veth pair: the generator's and the
# "VM"'s, where the listener (flowlogd, ulogd2, or none) runs with an
# nftables table that tracks connections, counts what arrives (the
# kernel's view of the ground truth) and drops one UDP port with
# `log group 100`. For every step the generator (bench/loadgen, pinned to
# one core) sends for a bounded time; the conntrack table is then flushed
# so every entry's DESTROY event is sent, the listener (pinned to the other
# core) is given time to drain, and stopped by its exact pid with SIGTERM.
# Its records are summed and compared with the generator's ground truth;
# CPU and peak RSS come from wait4(2) (bench-rusage). One markdown table
# at the end.
#
#   bash bench/run.sh            the full benchmark (several minutes)
#   bash bench/run.sh --smoke    a few seconds at a low rate; exit 1 unless
#                                flowlogd's records are exact
#   bash bench/run.sh --help     every option
#
# Needs root. Cleans up its namespaces, processes (by exact pid) and the
# host sysctls it raised, also on failure or Ctrl-C.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/run.sh [options]
  --smoke                one mixed run (UDP flows, TCP flows, drops) of 3 s at a low
                         rate, flowlogd then ulogd2; exits 1 unless flowlogd's records
                         equal the ground truth. Uses the debug build unless --profile.
  --steps "R ..."        rate steps, per second, `max` = as fast as the generator
                         goes [10000 50000 100000 max]
  --step-secs S          seconds per step [10]
  --kinds "K ..."        kinds of run: ct (new UDP flows: conntrack), nflog (dropped,
                         logged packets), ct-scrape (ct with flowlogd's /metrics
                         scraped every second, as Prometheus would: its CPU per
                         million events beside ct's), one step each; and the operator's routine
                         under load, one run each: stop (SIGTERM right after --op-secs
                         of --op-rate new flows/s, all flows live, then start again),
                         reload (SIGHUP 3 s after the traffic), flood (--flood-secs of
                         distinct flows at --op-rate with window_memory_bytes scaled
                         down as the window is); tcp and tcp-flags (TCP connect/close
                         flows at --tcp-steps, flowlogd only: without and with a field
                         list naming tcp-flags, so the rules copy every SYN, FIN and
                         RST to the daemon; the pair is the CPU cost of tcp-flags per
                         million connections); sg (flowlogd as the security group of the
                         VM's ENI, issue #16: TCP connect/close flows at --sg-steps, each
                         new connection's first packet queued to the daemon and verdicted;
                         beside each, the same rule set written directly in nftables with
                         no daemon: the cost to the packet path)
                         [ct ct-scrape nflog stop reload flood tcp tcp-flags sg]
  --tcp-steps "R ..."    TCP connections per second of the tcp and tcp-flags kinds; `max` =
                         as fast as the generator's one client connects (each connection
                         waits for the last: the pair's rates are tcp-flags' cost to the
                         packet path) [2000 5000]
  --sg-steps "R ..."     TCP connections per second of the sg kind; `max` = as fast as
                         the generator's one client connects (each connection waits for
                         the last: the rate is the packet path's latency) [2000 5000 max]
  --sg-udp-steps "R ..." new UDP flows per second of the sg kind (raw socket, no flow
                         waits for another: the verdicts' throughput) [10000 50000 100000 max]
  --op-rate R            new UDP flows per second of stop, reload, flood [100000]
  --op-secs S            seconds of traffic before the stop or reload [10]
  --flood-secs S         seconds of the flood, of the 600 s default window: the
                         window's memory bound is scaled by S/600 [60]
  --packets-per-flow K   packets per UDP flow in the steps [1]
  --long-secs S          the long mixed run; 0 skips it [60]
  --long-flows R         its new UDP flows per second [25000]
  --long-drops R         its dropped packets per second [25000]
  --long-tcp R           its TCP connect/close flows per second [500]
  --long-window S        flowlogd's capture window in the long run [10]
  --long-udp-timeout S   nf_conntrack_udp_timeout in the VM namespace during the
                         long run: with 25k flows/s and 10 s, ~250k live flows [10]
  --client-ports "LO HI" the generator's ephemeral port range for TCP flows; a narrow
                         range makes 5-tuples come back while their old entries live
                         (TIME_WAIT reopen) [10000 65000]
  --listeners "L ..."    flowlogd ulogd (none is always run at `max`) [flowlogd ulogd]
  --profile P            cargo profile of flowlogd and the generator [release]
  --no-build             use what is built
  --ulogd-rcvbuf BYTES   ulogd2's netlink_socket_buffer_size [134217728]
  --conntrack-max N      raise the host's net.netfilter.nf_conntrack_max to N during
                         the run (restored after; not in --smoke) [4194304]
  --gen-cpu N            core of the generator (and of `conntrack -F`) [0]
  --daemon-cpu N         core of the listener [1]
  --out FILE             also write the report (markdown) to FILE
  --keep                 keep the scratch directory (logs, configs, ground truth, results)
  --keep-records         also keep the listeners' records (a max step writes ~600 MB)
EOF
}

# --- options -----------------------------------------------------------------
SMOKE=0
STEPS="10000 50000 100000 max"
STEP_SECS=10
KINDS="ct ct-scrape nflog stop reload flood tcp tcp-flags sg"
OP_RATE=100000
OP_SECS=10
FLOOD_SECS=60
PPF=1
TCP_STEPS="2000 5000"
SG_STEPS="2000 5000 max"
SG_UDP_STEPS="10000 50000 100000 max"
LONG_SECS=60
LONG_FLOWS=25000
LONG_DROPS=25000
LONG_TCP=500
LONG_WINDOW=10
LONG_UDP_TIMEOUT=10
LISTENERS="flowlogd ulogd"
CLIENT_PORTS="10000 65000"
PROFILE=""
BUILD=1
ULOGD_RCVBUF=134217728
CONNTRACK_MAX=4194304
GEN_CPU=0
DAEMON_CPU=1
OUT=""
KEEP=0
KEEP_RECORDS=0
while (($#)); do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --steps) STEPS="$2"; shift ;;
        --step-secs) STEP_SECS="$2"; shift ;;
        --kinds) KINDS="$2"; shift ;;
        --op-rate) OP_RATE="$2"; shift ;;
        --op-secs) OP_SECS="$2"; shift ;;
        --flood-secs) FLOOD_SECS="$2"; shift ;;
        --packets-per-flow) PPF="$2"; shift ;;
        --tcp-steps) TCP_STEPS="$2"; shift ;;
        --sg-steps) SG_STEPS="$2"; shift ;;
        --sg-udp-steps) SG_UDP_STEPS="$2"; shift ;;
        --long-secs) LONG_SECS="$2"; shift ;;
        --long-flows) LONG_FLOWS="$2"; shift ;;
        --long-drops) LONG_DROPS="$2"; shift ;;
        --long-tcp) LONG_TCP="$2"; shift ;;
        --long-window) LONG_WINDOW="$2"; shift ;;
        --long-udp-timeout) LONG_UDP_TIMEOUT="$2"; shift ;;
        --listeners) LISTENERS="$2"; shift ;;
        --client-ports) CLIENT_PORTS="$2"; shift ;;
        --profile) PROFILE="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --ulogd-rcvbuf) ULOGD_RCVBUF="$2"; shift ;;
        --conntrack-max) CONNTRACK_MAX="$2"; shift ;;
        --gen-cpu) GEN_CPU="$2"; shift ;;
        --daemon-cpu) DAEMON_CPU="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --keep) KEEP=1 ;;
        --keep-records) KEEP=1 KEEP_RECORDS=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
# How long the listener may take to consume the flush's DESTROY events.
SETTLE_MAX=600
((SMOKE)) && SETTLE_MAX=60
if [[ -z $PROFILE ]]; then
    # The smoke mode runs in CI right after the debug build of the whole
    # workspace: reusing it costs no second (release, LTO) build.
    if ((SMOKE)); then PROFILE=dev; else PROFILE=release; fi
fi

if [[ $EUID -ne 0 ]]; then
    # As the privileged tests do: the smoke mode (part of the test suite)
    # skips outside CI with a message, and fails under CI=true so that CI
    # never goes green by skipping.
    if ((SMOKE)) && [[ ${CI:-} != true ]]; then
        echo "SKIPPED bench/run.sh --smoke: needs root (network namespaces, netlink); run it as root" >&2
        exit 0
    fi
    echo "bench/run.sh needs root: it creates network namespaces, nftables rules and" >&2
    echo "netlink listeners (run it with sudo)." >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in ip nft conntrack taskset sysctl awk; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is missing (bash scripts/install-test-deps.sh)" >&2; exit 2; }
done
if [[ " $LISTENERS " == *" ulogd "* ]] && ((SMOKE)) && ! command -v ulogd >/dev/null; then
    # The smoke mode asserts on flowlogd only; ulogd2 beside it is a bonus.
    echo "bench/run.sh: ulogd is not installed (apt-get install ulogd2 ulogd2-json); smoke-testing flowlogd alone" >&2
    LISTENERS=flowlogd
fi
if [[ " $LISTENERS " == *" ulogd "* ]]; then
    command -v ulogd >/dev/null || { echo "bench/run.sh: ulogd is missing: apt-get install ulogd2 ulogd2-json, or --listeners flowlogd" >&2; exit 2; }
    ULOGD_PLUGINS=""
    for f in /usr/lib/*/ulogd/ulogd_output_JSON.so /usr/lib/ulogd/ulogd_output_JSON.so; do
        [[ -f $f ]] && { ULOGD_PLUGINS=$(dirname "$f"); break; }
    done
    [[ -n $ULOGD_PLUGINS ]] || { echo "bench/run.sh: ulogd's JSON output is missing: apt-get install ulogd2-json" >&2; exit 2; }
fi
NPROC=$(nproc)
if ((GEN_CPU >= NPROC || DAEMON_CPU >= NPROC)); then
    echo "bench/run.sh: --gen-cpu/--daemon-cpu must be below nproc ($NPROC)" >&2
    exit 2
fi

# --- state and cleanup ------------------------------------------------------------
TMP=$(mktemp -d /tmp/flowlogd-bench.XXXXXX)
GEN="flb-gen-$$"
VM="flb-vm-$$"
NETNS_MADE=()
PIDS=()            # processes we started and may have to stop, by exact pid
SYSCTL_RESTORE=()  # "name=value" of host sysctls we changed
VM_ADDR=10.200.77.2
GEN_ADDR=10.200.77.1
SRC_NET=10.201.0.0/16
UDP_PORT=5001
DROP_PORT=5002
TCP_PORT=5003
NFLOG_GROUP=100

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    for ns in "${NETNS_MADE[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "warning: ip netns del $ns failed" >&2
    done
    for kv in "${SYSCTL_RESTORE[@]}"; do
        sysctl -qw "$kv" >/dev/null || echo "warning: could not restore $kv" >&2
    done
    if ((KEEP)); then echo "scratch directory kept: $TMP" >&2; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench/run.sh: interrupted" >&2; exit 130' INT TERM

die() { echo "bench/run.sh: $*" >&2; exit 1; }
# A reaped process's pid may be reused: stop tracking it once it is gone.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
log() { echo "== $*" >&2; }
in_vm() { ip netns exec "$VM" "$@"; }
in_gen() { ip netns exec "$GEN" "$@"; }

# --- build -------------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $PROFILE in
    dev | debug) PROFILE=dev; BIN=$TARGET/debug ;;
    *) BIN=$TARGET/$PROFILE ;;
esac
# The source measured: taken before the build (the tree may move on while
# the benchmark runs). With --no-build it is only what the tree is now.
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" --no-optional-locks status --porcelain -- daemon sinks/file plugin-api 2>/dev/null) ]]; then
    rev="$rev with uncommitted changes"
fi
((BUILD)) || rev="$rev (not rebuilt: --no-build)"
if ((BUILD)); then
    log "building flowlogd, the file sink and the generator (profile $PROFILE)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" -p flowlogd -p flowlogd-sink-file -p flowlogd-loadgen) >&2
fi
for b in flowlogd libflowlogd_sink_file.so loadgen bench-tally bench-rusage; do
    [[ -x $BIN/$b || -f $BIN/$b ]] || die "$BIN/$b is missing (build first, or drop --no-build)"
done

# --- the two namespaces -----------------------------------------------------------------
setup_namespaces() {
    ip netns add "$GEN"; NETNS_MADE+=("$GEN")
    ip netns add "$VM"; NETNS_MADE+=("$VM")
    for ns in "$GEN" "$VM"; do
        # IPv4 only: no router solicitations or MLD reports in the tables.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip link add flbg0 netns "$GEN" type veth peer name flbv0 netns "$VM"
    ip -n "$GEN" addr add "$GEN_ADDR/24" dev flbg0
    ip -n "$VM" addr add "$VM_ADDR/24" dev flbv0
    ip -n "$GEN" link set flbg0 up
    ip -n "$VM" link set flbv0 up
    # Static neighbours: no packet waits for (or is dropped behind) ARP.
    local gen_mac vm_mac
    gen_mac=$(in_gen cat /sys/class/net/flbg0/address)
    vm_mac=$(in_vm cat /sys/class/net/flbv0/address)
    ip -n "$GEN" neigh replace "$VM_ADDR" lladdr "$vm_mac" dev flbg0 nud permanent
    ip -n "$VM" neigh replace "$GEN_ADDR" lladdr "$gen_mac" dev flbv0 nud permanent
    # The flows' sources live behind the generator.
    ip -n "$VM" route add "$SRC_NET" via "$GEN_ADDR"
    in_vm sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.flbv0.rp_filter=0
    in_gen sysctl -qw net.ipv4.ip_local_port_range="$CLIENT_PORTS"
    # The same table for every listener (flowlogd runs with
    # install_tracking_table = false), so the kernel does the same work:
    # a `ct` rule makes the namespace track connections, named counters
    # are the kernel's count of what arrived, and the drop rule logs to
    # NFLOG with flowlogd's prefix convention.
    in_vm nft -f - <<EOF
table inet flbench {
    counter udp_flows {}
    counter tcp_orig {}
    counter tcp_reply {}
    counter drops {}
    chain pre {
        type filter hook prerouting priority -150; policy accept;
        ct state new counter
        udp dport $UDP_PORT counter name udp_flows
        tcp dport $TCP_PORT counter name tcp_orig
    }
    chain in {
        type filter hook input priority 0; policy accept;
        udp dport $DROP_PORT counter name drops log group $NFLOG_GROUP prefix "flowlogd:sg-bench:deny-udp" drop
    }
    chain out {
        type filter hook output priority -150; policy accept;
        tcp sport $TCP_PORT counter name tcp_reply
    }
    # Loopback (the ct-scrape runs' scraper of flowlogd's /metrics) is not
    # tracked: its entries would keep the table from emptying at the
    # settle, and they are not the benchmark's traffic.
    chain raw_pre {
        type filter hook prerouting priority -300; policy accept;
        iif lo notrack
    }
    chain raw_out {
        type filter hook output priority -300; policy accept;
        oif lo notrack
    }
}
EOF
    # Counters and timestamps as flowlogd would set them; events for every
    # new connection whether or not a listener exists (nf_conntrack_events=1),
    # so the no-listener ceiling pays for the same extension.
    in_vm sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1 \
        net.netfilter.nf_conntrack_events=1
}

# Host-wide conntrack limits: a 10 s step at the generator's maximum keeps
# over 2 million entries alive until the flush. Raised only, restored on exit.
raise_host_limits() {
    local cur
    cur=$(sysctl -n net.netfilter.nf_conntrack_max)
    if ((cur < CONNTRACK_MAX)); then
        SYSCTL_RESTORE+=("net.netfilter.nf_conntrack_max=$cur")
        sysctl -qw "net.netfilter.nf_conntrack_max=$CONNTRACK_MAX"
    fi
    cur=$(sysctl -n net.netfilter.nf_conntrack_buckets)
    local want=$((CONNTRACK_MAX / 4))
    if ((cur < want)); then
        SYSCTL_RESTORE+=("net.netfilter.nf_conntrack_buckets=$cur")
        sysctl -qw "net.netfilter.nf_conntrack_buckets=$want"
    fi
}

# Empties the VM's conntrack table and waits (bounded) until the kernel
# freed every entry.
flush_vm() {
    in_vm taskset -c "$GEN_CPU" conntrack -F >/dev/null 2>&1 || true
}

vm_conntrack_count() { in_vm cat /proc/sys/net/netfilter/nf_conntrack_count; }

# Sum of column $1 (5 = Rmem, 9 = Drops) of the VM's NETLINK_NETFILTER sockets.
# shellcheck disable=SC2016  # $2 and $c are awk's
vm_netlink_sum() { in_vm awk -v c="$1" 'NR > 1 && $2 == 12 { s += $c } END { print s + 0 }' /proc/net/netlink; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo gone; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# Waits until the VM's conntrack table is empty, no netlink socket holds
# unread messages, and the listener's CPU time has stopped moving for a
# second: everything the flush produced has been consumed. Bounded.
settle() {
    local pid=$1 max=$2 prev=-1 stable=0 cpu count rmem
    local deadline=$((SECONDS + max))
    while ((SECONDS < deadline)); do
        count=$(vm_conntrack_count)
        rmem=$(vm_netlink_sum 5)
        if [[ $pid == none ]]; then cpu=0; else cpu=$(cpu_ticks "$pid"); fi
        if [[ $count == 0 && $rmem == 0 && $cpu == "$prev" ]]; then
            stable=$((stable + 1))
            ((stable >= 5)) && return 0
        else
            stable=0
        fi
        prev=$cpu
        sleep 0.2
    done
    echo "warning: not settled after ${max}s (conntrack entries $count, unread netlink bytes $rmem)" >&2
}

# --- listeners ---------------------------------------------------------------------------
# The shipped defaults, but for what the bench namespace needs: the
# listeners share one ct table, and a max step keeps two million entries.
# FLOWLOGD_EXTRA adds [daemon] keys for one run (the flood's scaled bound).
# FLOWLOGD_TCP_FLAGS=1 gives the sink the 18 fields and tcp-flags, which
# needs the daemon's own table (its tcp-flags rules live there).
FLOWLOGD_EXTRA=""
FLOWLOGD_TCP_FLAGS=0
# FLOWLOGD_SG=1: flowlogd is the security group of eni-bench (issue #16),
# with the shipped [enforcement] defaults (queue 100, fail open).
FLOWLOGD_SG=0
SG_QUEUE=100
write_flowlogd_config() {  # dir window
    local dir=$1 window=$2 tracking="install_tracking_table = false" fields=""
    if ((FLOWLOGD_TCP_FLAGS)); then
        tracking="install_tracking_table = true"
        fields='fields = ["version", "vswitch-id", "vm-id", "vpc-id", "account-id", "eni-id", "srcaddr", "srcport", "dstaddr", "dstport", "protocol", "direction", "packets", "bytes", "start", "end", "log-status", "action", "tcp-flags"]'
    fi
    mkdir -p "$dir/plugins" "$dir/state"
    cp "$BIN/libflowlogd_sink_file.so" "$dir/plugins/file.so"
    chmod 0644 "$dir/plugins/file.so"
    cat >"$dir/flowlogd.toml" <<EOF
[daemon]
capture_window_secs = $window
plugin_dir = "$dir/plugins"
state_dir = "$dir/state"
nflog_groups = [$NFLOG_GROUP]
log_level = "info"
# The benchmark's own table references ct (the same for every listener);
# with tcp-flags the daemon's table is needed too.
$tracking
max_flows = 10000000
$FLOWLOGD_EXTRA

[[eni]]
id = "eni-bench"
interface = "flbv0"
vswitch_id = "vsw-bench"
vpc_id = "vpc-bench"
vm_id = "i-bench"
account_id = "0"

[[flow_log]]
name = "bench"
resource_type = "eni"
resource_id = "eni-bench"
traffic = "all"
sinks = ["file"]

[sinks.file]
plugin = "file"
path = "$dir/flowlogd.jsonl"
format = "json"
rotate_bytes = 0
$fields
EOF
    if ((FLOWLOGD_SG)); then sg_config >>"$dir/flowlogd.toml"; fi
}

# --- the sg kind -------------------------------------------------------------------------
# One rule lets the generator's TCP connections in; everything else
# arriving new meets the default ingress drop.
sg_config() {
    cat <<EOF

[[security_group]]
id = "sg-bench"
enis = ["eni-bench"]

[[security_group.rule]]
id = "allow-tcp"
direction = "ingress"
policy = "accept"
priority = 1
protocol = "tcp"
port_range = "$TCP_PORT/$TCP_PORT"
cidr = "$GEN_ADDR/32"

[[security_group.rule]]
id = "allow-udp"
direction = "ingress"
policy = "accept"
priority = 1
protocol = "udp"
port_range = "$UDP_PORT/$UDP_PORT"
cidr = "$SRC_NET"
EOF
}

# The same rule set written directly in nftables, where the daemon's
# table decides (prerouting, -160), the rule carried into the connection
# as a conntrack mark as the daemon's verdict does: the kernel alone.
sg_nft_ruleset() {
    cat <<EOF
table inet flbench_sg {
    chain arriving {
        type filter hook prerouting priority -160; policy accept;
        iifname "flbv0" ct state new tcp dport $TCP_PORT ip saddr $GEN_ADDR ct mark set 0x80000002 accept
        iifname "flbv0" ct state new udp dport $UDP_PORT ip saddr $SRC_NET ct mark set 0x80000004 accept
        iifname "flbv0" ct state new drop
    }
}
EOF
}

# The daemon's queue line (fields 6 and 7: queue_dropped, user_dropped;
# 8: id_sequence, the packets queued), read while the daemon holds it.
sg_queue_line() { in_vm awk -v q="$SG_QUEUE" '$1 == q' /proc/net/netfilter/nfnetlink_queue 2>/dev/null || true; }

# One markdown row of an sg run from its scratch directory.
sg_row() {  # step dir listener proto
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, os, sys
step, d, listener, proto = sys.argv[1:5]
t = json.load(open(d + "/truth.json"))
got = t[proto]
target = t["target"]["tcp" if proto == "tcp" else "flows"]
row = [f"{proto} {step}", "daemon (NFQUEUE)" if listener == "flowlogd" else "plain nft, no daemon",
       f"{target:,}" if isinstance(target, int) else str(target),
       f"{got['flows_per_sec']:,.0f}", str(got.get("failed", "-"))]
if listener == "flowlogd":
    q = open(d + "/nfqueue.txt").read().split() if os.path.exists(d + "/nfqueue.txt") else []
    queued = int(q[7]) if len(q) > 7 else 0
    lost = str(int(q[5]) + int(q[6])) if len(q) > 7 else "?"
    r = json.load(open(d + "/rusage.json"))
    cpu = r["utime_secs"] + r["stime_secs"]
    per_m = f"{cpu / queued * 1e6:.1f}" if queued else "-"
    ruled, accepts = (int(n) for n in open(d + "/ruled.txt").read().split())
    row += [f"{queued:,}", f"{ruled:,}", f"{accepts - ruled:,}", lost, f"{cpu:.2f}", per_m]
else:
    row += ["-", "-", "-", "-", "-", "-"]
print("| " + " | ".join(row) + " |")
PY
}

write_ulogd_config() {  # dir
    local dir=$1
    cat >"$dir/ulogd.conf" <<EOF
[global]
logfile="$dir/ulogd.log"
loglevel=3
plugin="$ULOGD_PLUGINS/ulogd_inpflow_NFCT.so"
plugin="$ULOGD_PLUGINS/ulogd_inppkt_NFLOG.so"
plugin="$ULOGD_PLUGINS/ulogd_raw2packet_BASE.so"
plugin="$ULOGD_PLUGINS/ulogd_filter_IFINDEX.so"
plugin="$ULOGD_PLUGINS/ulogd_filter_IP2STR.so"
plugin="$ULOGD_PLUGINS/ulogd_output_JSON.so"
stack=ct1:NFCT,ip2str1:IP2STR,jsonct:JSON
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str2:IP2STR,jsonlog:JSON

# ulogd at its best for final counters: no hash table (one record per
# DESTROY event, as flowlogd subscribes to DESTROY only), and a large
# receive buffer. It only sets the buffer when size < maxsize, and doubles
# it up to maxsize after an overrun.
[ct1]
hash_enable=0
event_mask=4
netlink_socket_buffer_size=$ULOGD_RCVBUF
netlink_socket_buffer_maxsize=$((ULOGD_RCVBUF * 2))

# The kernel batches logged packets as for flowlogd (256 per message,
# flushed every 10 ms).
[log1]
group=$NFLOG_GROUP
netlink_socket_buffer_size=$ULOGD_RCVBUF
netlink_socket_buffer_maxsize=$((ULOGD_RCVBUF * 2))
netlink_qthreshold=256
netlink_qtimeout=1

[jsonct]
file="$dir/ulogd-ct.json"
sync=0

[jsonlog]
file="$dir/ulogd-nflog.json"
sync=0
EOF
}

DAEMON_PID=""
WRAPPER_PID=""
SCRAPER_PID=""
# flowlogd's metrics endpoint: the default metrics.listen, in the VM namespace.
METRICS_URL=http://127.0.0.1:9750/metrics

# Scrapes URL every second, as Prometheus would, until killed or for at
# most ARG2 seconds; prints how many scrapes succeeded.
# shellcheck disable=SC2016
SCRAPER='
import signal, sys, time, urllib.request
# SIGTERM ends the loop through `finally`, which reports.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
url, limit = sys.argv[1], float(sys.argv[2])
ok = failed = 0
end = time.monotonic() + limit
try:
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            body = urllib.request.urlopen(url, timeout=5).read()
            ok += body.startswith(b"# HELP ")
        except Exception as e:
            failed += 1
            print("scrape failed:", e, file=sys.stderr, flush=True)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
finally:
    print("scrapes", ok, "failed", failed, flush=True)
'

# Starts the scraper in the VM namespace on the generator's core (its own
# CPU is not the listener's), for at most ARG1 seconds.
start_scraper() {  # dir max_secs
    local dir=$1 max=$2
    ip netns exec "$VM" taskset -c "$GEN_CPU" python3 -c "$SCRAPER" "$METRICS_URL" "$max" \
        >"$dir/scrapes.log" 2>&1 &
    SCRAPER_PID=$!
    PIDS+=("$SCRAPER_PID")
}

# Stops the scraper by its exact pid; fails the run unless it scraped.
stop_scraper() {  # dir
    local dir=$1
    kill -TERM "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" 2>/dev/null || true
    forget_pid "$SCRAPER_PID"
    SCRAPER_PID=""
    local n
    n=$(awk '/^scrapes / { print $2 }' "$dir/scrapes.log")
    ((${n:-0} > 0)) || { cat "$dir/scrapes.log" >&2; die "the metrics scraper got no page from $METRICS_URL"; }
    log "  $n scrapes of $METRICS_URL, $(awk '/^scrapes / { print $4 }' "$dir/scrapes.log") failed"
}

# Starts the listener in the VM namespace on the daemon core, under
# bench-rusage, and waits (bounded) until it is ready.
start_listener() {  # name dir window
    local name=$1 dir=$2 window=$3 ready cmd
    case $name in
        flowlogd)
            write_flowlogd_config "$dir" "$window"
            cmd=("$BIN/flowlogd" run --config "$dir/flowlogd.toml")
            ready="capturing:"
            ;;
        ulogd)
            write_ulogd_config "$dir"
            cmd=(ulogd -c "$dir/ulogd.conf")
            ready="entering main loop"
            ;;
        *) die "unknown listener $name" ;;
    esac
    ip netns exec "$VM" taskset -c "$DAEMON_CPU" "$BIN/bench-rusage" "$dir/rusage.json" "$dir/pid" -- \
        "${cmd[@]}" 2>"$dir/stderr.log" &
    WRAPPER_PID=$!
    PIDS+=("$WRAPPER_PID")
    local deadline=$((SECONDS + 30)) logfile=$dir/stderr.log
    [[ $name == ulogd ]] && logfile=$dir/ulogd.log
    DAEMON_PID=""
    while ((SECONDS < deadline)); do
        [[ -z $DAEMON_PID && -s $dir/pid ]] && { DAEMON_PID=$(cat "$dir/pid"); PIDS+=("$DAEMON_PID"); }
        if [[ -n $DAEMON_PID ]] && grep -q "$ready" "$logfile" 2>/dev/null; then return 0; fi
        if ! kill -0 "$WRAPPER_PID" 2>/dev/null || [[ -s $dir/rusage.json ]]; then
            cat "$dir/stderr.log" "$dir/ulogd.log" 2>/dev/null | tail -n 20 >&2
            die "$name exited before it was ready"
        fi
        sleep 0.1
    done
    die "$name not ready after 30 s (see $logfile)"
}

# SIGTERM to the listener's exact pid; waits (bounded) for bench-rusage to
# report, then SIGKILL.
stop_listener() {  # dir
    local dir=$1
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 360))
    while ((SECONDS < deadline)) && [[ ! -s $dir/rusage.json ]]; do sleep 0.1; done
    if [[ ! -s $dir/rusage.json ]]; then
        echo "warning: listener $DAEMON_PID did not exit after SIGTERM; killing it" >&2
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    wait "$WRAPPER_PID" 2>/dev/null || true
    # bench-rusage reaped the listener before it exited.
    forget_pid "$WRAPPER_PID"
    forget_pid "$DAEMON_PID"
}

# --- one run -----------------------------------------------------------------------------
RESULTS=$TMP/results.jsonl
RUN_N=0

# Sets a stopped listener's files aside before it starts again in the same
# directory: its cost and log are added up at the end (merge_run_files).
set_run_aside() {  # dir
    local dir=$1 n=1
    while [[ -e $dir/rusage.$n.json ]]; do n=$((n + 1)); done
    mv "$dir/rusage.json" "$dir/rusage.$n.json"
    [[ -f $dir/stderr.log ]] && mv "$dir/stderr.log" "$dir/stderr.$n.log"
    rm -f "$dir/pid"
}

# One listener's cost over all its starts: CPU times summed, the largest
# peak RSS; logs in start order.
merge_run_files() {  # dir
    local dir=$1
    compgen -G "$dir/rusage.*.json" >/dev/null || return 0
    python3 - "$dir" <<'PY'
import glob, json, sys
d = sys.argv[1]
runs = [json.load(open(p)) for p in sorted(glob.glob(d + "/rusage.*.json"))] + [json.load(open(d + "/rusage.json"))]
out = dict(runs[-1])
out["utime_secs"] = sum(r["utime_secs"] for r in runs)
out["stime_secs"] = sum(r["stime_secs"] for r in runs)
out["maxrss_kib"] = max(r["maxrss_kib"] for r in runs)
out["starts"] = len(runs)
json.dump(out, open(d + "/rusage.json", "w"))
PY
    cat "$dir"/stderr.*.log "$dir/stderr.log" >"$dir/stderr-all.log" 2>/dev/null || true
    mv "$dir/stderr-all.log" "$dir/stderr.log"
}

# What a stop leaves in flowlogd's spool is delivered by its next start, as
# on an operator's machine: start it again until the spool is empty
# (bounded), then stop it.
deliver_spool() {  # listener dir window
    local listener=$1 dir=$2 window=$3
    [[ $listener == flowlogd ]] || return 0
    compgen -G "$dir/state/spool/*/*.seg" >/dev/null || return 0
    log "  the stop left records in the spool: starting flowlogd again to deliver them"
    set_run_aside "$dir"
    start_listener "$listener" "$dir" "$window"
    local deadline=$((SECONDS + 600))
    while compgen -G "$dir/state/spool/*/*.seg" >/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    compgen -G "$dir/state/spool/*/*.seg" >/dev/null && echo "warning: spool not delivered after 600 s" >&2
    stop_listener "$dir"
}

# run_one LABEL KIND LISTENER SECS FLOWS DROPS TCP PPF WINDOW UDP_TIMEOUT [OP]
# OP: stop (SIGTERM right after the traffic, then start again), reload
# (SIGHUP 3 s after it), or scrape (flowlogd's /metrics every second from
# the traffic's start to the listener's stop).
run_one() {
    local label=$1 kind=$2 listener=$3 secs=$4 flows=$5 drops=$6 tcp=$7 ppf=$8 window=$9 udp_timeout=${10} op=${11:-}
    RUN_N=$((RUN_N + 1))
    local dir=$TMP/run-$RUN_N-${listener}
    mkdir -p "$dir"
    log "$label: $listener (flows $flows/s, drops $drops/s, tcp $tcp/s, ${secs}s)"
    flush_vm
    local deadline=$((SECONDS + 60))
    while (($(vm_conntrack_count) > 0)) && ((SECONDS < deadline)); do sleep 0.2; done
    in_vm sysctl -qw "net.netfilter.nf_conntrack_udp_timeout=$udp_timeout"
    in_vm nft reset counters table inet flbench >/dev/null
    local idle_rss=0
    DAEMON_PID=none
    if [[ $listener != none ]]; then
        start_listener "$listener" "$dir" "$window"
        idle_rss=$(rss_kib "$DAEMON_PID")
        # Bounded: the traffic, the settle after it, and a margin.
        if [[ $op == scrape ]]; then start_scraper "$dir" $((secs + SETTLE_MAX + 60)); fi
    fi
    ip netns exec "$GEN" taskset -c "$GEN_CPU" "$BIN/loadgen" --dst "$VM_ADDR" --src-net "$SRC_NET" \
        --secs "$secs" --flows "$flows" --drops "$drops" --tcp "$tcp" --packets-per-flow "$ppf" \
        --udp-port "$UDP_PORT" --drop-port "$DROP_PORT" --tcp-port "$TCP_PORT" --vm-netns "$VM" \
        >"$dir/truth.json" 2>"$dir/loadgen.log" &
    local gen_pid=$!
    PIDS+=("$gen_pid")
    wait "$gen_pid" || { cat "$dir/loadgen.log" >&2; die "the generator failed"; }
    forget_pid "$gen_pid"
    in_vm nft -j list counters table inet flbench >"$dir/counters.json"
    if ((FLOWLOGD_SG)) && [[ $listener == flowlogd ]]; then sg_queue_line >"$dir/nfqueue.txt"; fi
    if [[ $listener != none ]]; then
        case $op in
            stop)
                # Every flow is still live: the stop closes the window with
                # all of them, the next start carries them on.
                log "  SIGTERM under load, then start again"
                stop_listener "$dir"
                deliver_spool "$listener" "$dir" "$window"
                set_run_aside "$dir"
                start_listener "$listener" "$dir" "$window"
                ;;
            reload)
                sleep 3
                log "  SIGHUP"
                kill -HUP "$DAEMON_PID"
                if [[ $listener == flowlogd ]]; then
                    local until=$((SECONDS + 120))
                    while ! grep -q "reloaded" "$dir/stderr.log" && ((SECONDS < until)); do sleep 0.1; done
                    grep -q "reloaded" "$dir/stderr.log" || die "flowlogd did not log a reload in 120 s"
                fi
                ;;
        esac
    fi
    # Every entry's DESTROY event now, instead of over the UDP timeout.
    local t0=$SECONDS
    flush_vm
    settle "$DAEMON_PID" "$SETTLE_MAX"
    local settle_secs=$((SECONDS - t0)) nl_drops=0
    if [[ $listener != none ]]; then
        nl_drops=$(vm_netlink_sum 9)
        if [[ $op == scrape ]]; then stop_scraper "$dir"; fi
        stop_listener "$dir"
        deliver_spool "$listener" "$dir" "$window"
        merge_run_files "$dir"
    fi
    local args=(--label "$label" --kind "$kind" --daemon "$listener" --target "$flows/$drops/$tcp"
        --truth "$dir/truth.json" --counters "$dir/counters.json" --netlink-drops "$nl_drops"
        --settle-secs "$settle_secs" --idle-rss-kib "$idle_rss"
        --udp-port "$UDP_PORT" --tcp-port "$TCP_PORT" --drop-port "$DROP_PORT")
    case $listener in
        flowlogd) args+=(--rusage "$dir/rusage.json" --records "$dir/flowlogd.jsonl" --log "$dir/stderr.log") ;;
        ulogd) args+=(--rusage "$dir/rusage.json" --ulogd-ct "$dir/ulogd-ct.json" --ulogd-nflog "$dir/ulogd-nflog.json"
            --log "$dir/ulogd.log") ;;
    esac
    "$BIN/bench-tally" run "${args[@]}" >>"$RESULTS"
    # Records that name the deciding rule were verdicted; an ACCEPT record
    # without one passed unqueued (the queue full and fail-open).
    if ((FLOWLOGD_SG)) && [[ $listener == flowlogd ]]; then
        {
            grep -c '"rule":"sg-bench:' "$dir/flowlogd.jsonl" || true
            grep -c '"action":"ACCEPT"' "$dir/flowlogd.jsonl" || true
        } >"$dir/ruled.txt"
    fi
    # The records can be large; keep only the small files unless asked.
    ((KEEP_RECORDS)) || rm -f "$dir/flowlogd.jsonl" "$dir/ulogd-ct.json" "$dir/ulogd-nflog.json"
}

# --- the plan -------------------------------------------------------------------------------
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
setup_namespaces
((SMOKE)) || raise_host_limits

if ((SMOKE)); then
    for l in $LISTENERS; do
        run_one "smoke mixed 3 s" mixed "$l" 3 2000 2000 50 2 3600 30
    done
else
    for kind in $KINDS; do
        for step in $STEPS; do
            op=""
            case $kind in
                ct) flows=$step drops=0 ;;
                nflog) flows=0 drops=$step ;;
                # Metrics are flowlogd's: the other listeners' rows would
                # repeat ct's.
                ct-scrape) flows=$step drops=0 op=scrape ;;
                stop | reload | flood | tcp | tcp-flags | sg) continue ;;
                *) die "unknown kind $kind (ct, ct-scrape, nflog, stop, reload, flood, tcp, tcp-flags)" ;;
            esac
            label="$kind $step"
            [[ $step == max && -z $op ]] && run_one "$label" "$kind" none "$STEP_SECS" "$flows" "$drops" 0 "$PPF" 3600 30
            for l in $LISTENERS; do
                [[ -n $op && $l != flowlogd ]] && continue
                run_one "$label" "${kind%-scrape}" "$l" "$STEP_SECS" "$flows" "$drops" 0 "$PPF" 3600 30 "$op"
            done
        done
    done
    for kind in $KINDS; do
        case $kind in
            stop | reload)
                for l in $LISTENERS; do
                    run_one "$kind under load ($OP_RATE/s, ${OP_SECS} s)" ct "$l" "$OP_SECS" "$OP_RATE" 0 0 "$PPF" 600 30 "$kind"
                done
                ;;
            tcp | tcp-flags)
                # flowlogd alone: ulogd2 has no tcp-flags to compare.
                [[ " $LISTENERS " == *" flowlogd "* ]] || continue
                [[ $kind == tcp-flags ]] && FLOWLOGD_TCP_FLAGS=1
                for step in $TCP_STEPS; do
                    rate=$step
                    [[ $step == max ]] && rate=100000
                    run_one "$kind $step conn/s" tcp flowlogd "$STEP_SECS" 0 0 "$rate" "$PPF" 3600 30
                done
                FLOWLOGD_TCP_FLAGS=0
                # Its table stays after a stop (as it should on a VM): the
                # runs after this one must not pay for its rules.
                in_vm nft delete table inet flowlogd 2>/dev/null || true
                ;;
            sg)
                [[ " $LISTENERS " == *" flowlogd "* ]] || continue
                SG_ROWS=$TMP/sg-rows.md
                for step in $SG_STEPS; do
                    rate=$step
                    [[ $step == max ]] && rate=100000
                    sg_nft_ruleset | in_vm nft -f -
                    run_one "sg-nft $step conn/s" tcp none "$STEP_SECS" 0 0 "$rate" "$PPF" 3600 30
                    in_vm nft delete table inet flbench_sg
                    sg_row "$step" "$TMP/run-$RUN_N-none" none tcp >>"$SG_ROWS"
                    FLOWLOGD_SG=1
                    run_one "sg $step conn/s" tcp flowlogd "$STEP_SECS" 0 0 "$rate" "$PPF" 3600 30
                    FLOWLOGD_SG=0
                    # The daemon leaves its table in place on exit (fail open), by design.
                    in_vm "$BIN/flowlogd" remove-tracking-table --config "$TMP/run-$RUN_N-flowlogd/flowlogd.toml" >&2
                    sg_row "$step" "$TMP/run-$RUN_N-flowlogd" flowlogd tcp >>"$SG_ROWS"
                done
                # New UDP flows from the generator's raw socket, not waiting for
                # one another: the verdicts' throughput, and where the queue
                # starts to drop.
                for step in $SG_UDP_STEPS; do
                    sg_nft_ruleset | in_vm nft -f -
                    run_one "sg-nft udp $step flows/s" ct none "$STEP_SECS" "$step" 0 0 "$PPF" 3600 30
                    in_vm nft delete table inet flbench_sg
                    sg_row "$step" "$TMP/run-$RUN_N-none" none udp >>"$SG_ROWS"
                    FLOWLOGD_SG=1
                    run_one "sg udp $step flows/s" ct flowlogd "$STEP_SECS" "$step" 0 0 "$PPF" 3600 30
                    FLOWLOGD_SG=0
                    in_vm "$BIN/flowlogd" remove-tracking-table --config "$TMP/run-$RUN_N-flowlogd/flowlogd.toml" >&2
                    sg_row "$step" "$TMP/run-$RUN_N-flowlogd" flowlogd udp >>"$SG_ROWS"
                done
                ;;
            flood)
                # A full default window (600 s) scaled down to FLOOD_SECS:
                # the window's memory bound scaled by the same factor.
                bound=$((268435456 * FLOOD_SECS / 600))
                FLOWLOGD_EXTRA="window_memory_bytes = $bound"
                for l in $LISTENERS; do
                    run_one "flood ($OP_RATE/s, ${FLOOD_SECS} s, window_memory_bytes $((bound >> 20)) MiB)" ct "$l" \
                        "$FLOOD_SECS" "$OP_RATE" 0 0 1 600 30
                done
                FLOWLOGD_EXTRA=""
                ;;
        esac
    done
    if ((LONG_SECS > 0)); then
        for l in $LISTENERS; do
            run_one "mixed ${LONG_SECS} s" mixed "$l" "$LONG_SECS" "$LONG_FLOWS" "$LONG_DROPS" "$LONG_TCP" 2 \
                "$LONG_WINDOW" "$LONG_UDP_TIMEOUT"
        done
    fi
fi

report=$TMP/report.md
{
    ulogd_version=$(command -v ulogd >/dev/null && ulogd -V 2>&1 | awk '/Version/ { print $NF; exit }' || echo "not installed")
    echo "flowlogd $rev, ulogd2 $ulogd_version. Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg); profile $PROFILE; generator on core $GEN_CPU, listener on core $DAEMON_CPU; started $started."
    echo
} >"$report"
status=0
if ((SMOKE)); then
    "$BIN/bench-tally" report "$RESULTS" --smoke >>"$report" || status=$?
else
    "$BIN/bench-tally" report "$RESULTS" >>"$report" || status=$?
    if [[ -s ${SG_ROWS:-} ]]; then
        {
            echo
            echo "Security groups (sg): new TCP connections verdicted by the daemon, against the same rule set in plain nftables"
            echo
            echo "| step | path | target /s | sent /s | failed | queued (id_sequence) | ACCEPT records with the rule (verdicted) | ACCEPT records without (passed unverdicted) | queue drops | daemon CPU s | CPU s per million queued |"
            echo "|---|---|---|---|---|---|---|---|---|---|---|"
            cat "$SG_ROWS"
        } >>"$report"
    fi
fi
cat "$report"
[[ -n $OUT ]] && cp "$report" "$OUT"
exit "$status"
