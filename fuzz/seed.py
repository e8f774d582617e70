#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Netlink seeds are the real messages captured from the kernel in
tests/fixtures/netlink/*.hex (one file per message, and one datagram of
every message of a file, as the socket reads them); packet and NFLOG seeds
are the packets of the unit tests in daemon/src/packet.rs; config seeds are
etc/flowlogd.toml and a few small files. Run from anywhere; idempotent.
"""
import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "netlink"
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def hex_messages(name):
    for line in (FIXTURES / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            yield bytes.fromhex(line.split()[1])


def nla(kind, value):
    n = struct.pack("=HH", 4 + len(value), kind) + value
    return n + b"\0" * (-len(n) % 4)


TCP_SYN_V4 = (bytes([0x45, 0, 0, 0x3C, 0x12, 0x34, 0x40, 0, 0x40, 6, 0, 0,
                     10, 0, 0, 1, 10, 0, 0, 2, 0x9C, 0x40, 0, 0x16]) + bytes(36))
FD00_1 = bytes.fromhex("fd000000000000000000000000000001")
FD00_2 = bytes.fromhex("fd000000000000000000000000000002")
UDP_V6_HOPOPTS = (bytes([0x60, 0, 0, 0, 0, 0x18, 0, 64]) + FD00_1 + FD00_2
                  + bytes([17, 0, 0, 0, 0, 0, 0, 0])
                  + bytes([0x13, 0x88, 0, 0x35, 0, 0x10, 0, 0]))
ICMP_V4 = TCP_SYN_V4[:9] + bytes([1]) + TCP_SYN_V4[10:]
PACKETS = [TCP_SYN_V4, TCP_SYN_V4[:24], UDP_V6_HOPOPTS, ICMP_V4]


def main():
    for target, files in (("conntrack", ["conntrack_events.hex", "conntrack_dump.hex"]),
                          ("route", ["route_events.hex", "route_dump.hex"])):
        for name in files:
            messages = list(hex_messages(name))
            for m in messages:
                write(target, m)
            write(target, b"".join(m + b"\0" * (-len(m) % 4) for m in messages))
    for p in PACKETS:
        write("packet", p)
        # nfgenmsg (AF_INET, version 0, group 5 big-endian), then attributes
        # in the kernel's order: prefix, indev, payload, seq.
        write("nflog", bytes([2, 0, 0, 5])
              + nla(10, b"flowlogd:sg-web:deny-ssh\0")
              + nla(4, struct.pack(">I", 3))
              + nla(9, p)
              + nla(12, struct.pack(">I", 7)))
    write("config", (ROOT / "etc" / "flowlogd.toml").read_bytes())
    write("config", b'[daemon]\nlog_level = "debug"\n\n[[sinks]]\nname = "file"\n'
                    b'plugin = "file"\n[sinks.options]\npath = "/tmp/x"\n')
    write("config", b"[capture]\nwindow_seconds = 60\n")


if __name__ == "__main__":
    main()
