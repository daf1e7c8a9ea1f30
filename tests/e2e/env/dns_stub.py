#!/usr/bin/env python3
"""A tiny authoritative DNS server over UDP for tests: answers A queries for the names given with
the address given, NODATA for other types of those names, NXDOMAIN for anything else. Logs one line per
query on stdout.

    dns_stub.py LISTEN_ADDR NAME=IPV4 [NAME=IPV4 ...]      (port 53 on LISTEN_ADDR)
"""
import socket
import struct
import sys


def parse_question(msg):
    """(name, qtype, end offset) of the first question; raises on malformed input."""
    labels, i = [], 12
    while True:
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:
            raise ValueError("compressed question name")
        labels.append(msg[i + 1:i + 1 + n].decode("ascii").lower())
        i += 1 + n
    qtype, _qclass = struct.unpack("!HH", msg[i:i + 4])
    return ".".join(labels), qtype, i + 4


def answer(msg, names):
    ident, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount != 1:
        return None
    name, qtype, end = parse_question(msg)
    question = msg[12:end]
    rd = flags & 0x0100
    if name not in names:
        return struct.pack("!HHHHHH", ident, 0x8083 | rd, 1, 0, 0, 0) + question, name, qtype, "NXDOMAIN"
    if qtype != 1:  # A only
        return struct.pack("!HHHHHH", ident, 0x8480 | rd, 1, 0, 0, 0) + question, name, qtype, "NODATA"
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(names[name])
    return struct.pack("!HHHHHH", ident, 0x8480 | rd, 1, 1, 0, 0) + question + rr, name, qtype, names[name]


def main():
    addr = sys.argv[1]
    names = dict(a.lower().split("=", 1) for a in sys.argv[2:])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    print(f"dns_stub: listening on {addr}:53 for {sorted(names)}", flush=True)
    while True:
        msg, peer = s.recvfrom(512)
        try:
            out = answer(msg, names)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            continue
        if out is None:
            continue
        reply, name, qtype, result = out
        s.sendto(reply, peer)
        print(f"query name={name} type={qtype} answer={result}", flush=True)


if __name__ == "__main__":
    main()
