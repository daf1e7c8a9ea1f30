#!/usr/bin/env python3
"""Render the figures bench/run collected (key=value lines) as markdown tables.

usage: report.py RESULTS.txt
"""
import sys

LABELS = {
    "direct": "upstream direct (distribution, TLS)",
    "ours-mirror": "**registry-proxy, mirror (HTTP)**",
    "ours-connect": "**registry-proxy, CONNECT (TLS)**",
    "nginx-tls": "nginx proxy_cache (TLS)",
    "nginx-http": "nginx proxy_cache (HTTP)",
    "squid": "squid ssl-bump (CONNECT, TLS)",
    "dist": "distribution pull-through (HTTP)",
}


def main():
    r = {}
    for line in open(sys.argv[1]):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            r[k] = v
    peers = [ep for ep in r["peers"].split() if ep in LABELS]

    def g(ep, key, fmt=None):
        v = r.get(f"{ep}.{key}")
        if v is None or v == "":
            return "-"
        if fmt:
            try:
                return fmt.format(float(v))
            except ValueError:
                return v
        return v

    def f(ep, key):
        try:
            return float(r[f"{ep}.{key}"])
        except (KeyError, ValueError):
            return None

    out = []
    p = out.append
    p(f"Machine: {r['machine']}; load average {r['load']} (start -> end of the run).")
    p("")
    p(f"Versions: {r['versions']}.")
    p("")
    p(f"Command: `{r['command']}` (run {r['date']}, took {r['elapsed']} s).")
    p("")
    p(
        f"Big blob: {r['blob_mb']} MiB ({r['blob_size']} bytes), one layer, gzip level 0; herd blob: "
        f"{r['herd_mb']} MiB. MB/s = 10^6 bytes per second. Every client is a `curl` process writing to "
        "/dev/null on the same 2 cores as the servers."
    )
    p("")
    p("#### Warm blob (already cached): throughput and peak memory")
    p("")
    p("| endpoint | 1 client MB/s | 16 clients MB/s (aggregate) | server CPU, 16 clients (s per GB) | peak RSS, 16 clients (MiB) | peak RSS, herd (MiB) |")
    p("|---|---:|---:|---:|---:|---:|")
    for ep in peers:
        bad = r.get(f"{ep}.warm16_bad", "0")
        note = f" ({bad} failed)" if bad not in ("0", "") else ""
        p(f"| {LABELS[ep]} | {g(ep, 'warm1')} | {g(ep, 'warm16')}{note} | {g(ep, 'cpu16')} | {g(ep, 'rss16')} | {g(ep, 'rss32')} |")
    p("")
    p("#### Cold blob (empty cache), one client")
    p("")
    p("| endpoint | time to first byte (s) | total (s) | vs direct | upstream blob GETs | server CPU (s per GB) |")
    p("|---|---:|---:|---:|---:|---:|")
    direct = f("direct", "cold_total")
    for ep in peers:
        if ep == "nginx-http":
            continue
        t = f(ep, "cold_total")
        vs = f"{100 * t / direct - 100:+.0f}%" if t and direct else "-"
        p(
            f"| {LABELS[ep]} | {g(ep, 'cold_ttfb', '{:.3f}')} | {g(ep, 'cold_total', '{:.2f}')} | {vs} "
            f"| {g(ep, 'cold_up')} | {g(ep, 'cpucold')} |"
        )
    p("")
    p(f"#### Herd: 32 clients start on the same cold {r['herd_mb']} MiB blob at once, then the same 32 once it is cached")
    p("")
    p("| endpoint | upstream blob GETs | cold wall (s) | median TTFB cold (s) | cached wall (s) | cold / cached | server CPU, cold (s per GB served) | failed |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for ep in peers:
        if ep in ("nginx-http", "direct"):
            continue
        a, b = f(ep, "herd_wall"), f(ep, "herdw_wall")
        ratio = f"{a / b:.2f}" if a and b else "-"
        bad = int(float(r.get(f"{ep}.herd_bad", 0) or 0)) + int(float(r.get(f"{ep}.herdw_bad", 0) or 0))
        p(
            f"| {LABELS[ep]} | {g(ep, 'herd_up')} | {g(ep, 'herd_wall', '{:.2f}')} | {g(ep, 'herd_ttfb', '{:.3f}')} "
            f"| {g(ep, 'herdw_wall', '{:.2f}')} | {ratio} | {g(ep, 'cpuherd')} | {bad} |"
        )
    p("")
    p(f"#### Manifest hits (GET by digest, 16 connections; wrk for {r['manifest_secs']} s, curl for {int(r['manifest_secs']) * 400} requests)")
    p("")
    p("| endpoint | wrk req/s | wrk p99 (ms) | curl --parallel req/s | curl p99 (ms) |")
    p("|---|---:|---:|---:|---:|")
    for ep in peers:
        w = (r.get(f"{ep}.mwrk") or "- -").split()
        c = (r.get(f"{ep}.mcurl") or "- -").split()
        wn = f" ({' '.join(w[2:])})" if len(w) > 2 else ""
        cn = f" ({' '.join(c[2:])})" if len(c) > 2 else ""
        p(f"| {LABELS[ep]} | {w[0]}{wn} | {w[1]} | {c[0]}{cn} | {c[1]} |")
    p("")

    # the targets of issue 3, checked against the figures above
    checks = []

    def check(name, ok, detail):
        if ok is not None:
            checks.append(f"- {'met' if ok else '**not met**'}: {name} ({detail})")

    for ours, peer in (("ours-connect", "nginx-tls"), ("ours-mirror", "nginx-http")):
        for key, what in (("warm1", "1 client"), ("warm16", "16 clients")):
            a, b = f(ours, key), f(peer, key)
            if a and b:
                check(f"warm throughput {LABELS[ours]} ≥ {LABELS[peer]}, {what}", a >= b, f"{a:.0f} vs {b:.0f} MB/s")
    for ours in ("ours-mirror", "ours-connect"):
        t = f(ours, "cold_total")
        if t and direct:
            check(f"cold pull within 10% of direct, {LABELS[ours]}", t <= 1.10 * direct, f"{t:.2f} s vs {direct:.2f} s")
        up, a, b = f(ours, "herd_up"), f(ours, "herd_wall"), f(ours, "herdw_wall")
        if up is not None:
            check(f"herd costs exactly one upstream fetch, {LABELS[ours]}", up == 1, f"{up:.0f}")
        if a and b:
            check(f"herd ≤ 1.25× cached time, {LABELS[ours]}", a <= 1.25 * b, f"{a / b:.2f}×")
        for key, what in (("rss16", "16 clients on the warm blob"), ("rss32", "32-client herd")):
            m = f(ours, key)
            if m:
                check(f"peak RSS < 64 MiB, {LABELS[ours]}, {what}", m < 64, f"{m:.1f} MiB")
    if "auth.anon_us" in r:
        p("#### Client authentication on hits (issue 7)")
        p("")
        p("The same registry-proxy on a warm cache (mirror mode), first anonymous, then with `PROXY_HTPASSWD` "
          "and every request carrying credentials. Server CPU of the proxy process.")
        p("")
        p("| requests carry | manifest hits: CPU per request (µs) | manifest hits req/s (wrk, 16 conns) | 16 warm blob pulls: CPU (s per GB) |")
        p("|---|---:|---:|---:|")
        for key, what in (("anon", "nothing (anonymous, auth off)"), ("basic", "`Authorization: Basic` (htpasswd user)"),
                          ("bearer", "`Authorization: Bearer` (the proxy's token)")):
            p(f"| {what} | {r.get(f'auth.{key}_us', '-')} | {r.get(f'auth.{key}_rps', '-')} | {r.get(f'auth.{key}_blob', '-')} |")
        p("")
        a = f("auth", "anon_us")
        for key, what in (("basic", "Basic"), ("bearer", "bearer token")):
            b = f("auth", f"{key}_us")
            if a and b:
                check(f"an authenticated manifest hit ({what}) costs at most 10% more CPU than an anonymous one",
                      b <= 1.10 * a, f"{b:.1f} vs {a:.1f} µs, {b / a:.2f}×")
            ab, bb = f("auth", "anon_blob"), f("auth", f"{key}_blob")
            if ab and bb:
                check(f"an authenticated warm blob hit ({what}) costs at most 10% more CPU per GB",
                      bb <= 1.10 * ab, f"{bb:.3f} vs {ab:.3f} s/GB, {bb / ab:.2f}×")
    idle = [ep for ep in ("ours-idle", "nginx-idle") if f"{ep}.rss" in r]
    if idle:
        p("#### Many idle clients (issue 10)")
        p("")
        p("Each client makes one manifest hit on a keep-alive connection, then stays connected and silent. "
          "Resident memory of the server (all its processes), and one warm pull of the big blob (median of 3) "
          "without and during the idle connections.")
        p("")
        p("| server | idle connections (failed) | RSS before (MiB) | RSS with them (MiB) | per connection (KiB) | warm pull alone (MB/s) | warm pull during (MB/s) |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for ep in idle:
            n, a, b = f(ep, "ok"), f(ep, "rss0"), f(ep, "rss")
            per = f"{(b - a) * 1024 / n:.1f}" if n and a is not None and b is not None else "-"
            who = "registry-proxy" if ep == "ours-idle" else "nginx"
            p(f"| {who} | {g(ep, 'ok')} ({g(ep, 'failed')}) | {g(ep, 'rss0')} | {g(ep, 'rss')} | {per} | {g(ep, 'alone')} | {g(ep, 'during')} |")
        p("")
        m, n = f("ours-idle", "rss"), f("ours-idle", "ok")
        if m is not None and n:
            check(f"{n:.0f} idle keep-alive connections cost < 100 MiB RSS, registry-proxy", m < 100, f"{m:.1f} MiB")
        a, b = f("ours-idle", "alone"), f("ours-idle", "during")
        if a and b:
            check("a warm pull does not slow down with the idle connections (within 10%), registry-proxy",
                  b >= 0.9 * a, f"{b:.0f} vs {a:.0f} MB/s")
    if checks:
        p("#### Targets (issues 3, 7 and 10)")
        p("")
        out.extend(checks)
        p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
