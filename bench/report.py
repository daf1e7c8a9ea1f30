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
    cold_only = r.get("only") == "cold"
    if cold_only:
        p("Cold pulls only (`BENCH_ONLY=cold`).")
        p("")
    else:
        warm_table(p, r, peers, g)
    cold_table(p, r, peers, g, f)
    if not cold_only:
        herd_and_manifest_tables(p, r, peers, g, f)
        auth_table(p, r)
    checks = []

    def check(name, ok, detail):
        if ok is not None:
            checks.append(f"- {'met' if ok else '**not met**'}: {name} ({detail})")

    cold_checks(check, f)
    if not cold_only:
        old_checks(check, r, f)
        idle_table(p, r, g, f, check)
        scale_out(r, p, check)
    if checks:
        p("#### Targets (issues 3, 7, 9 and 10)")
        p("")
        out.extend(checks)
        p("")
    print("\n".join(out))


def warm_table(p, r, peers, g):
    p("#### Warm blob (already cached): throughput and peak memory")
    p("")
    p("| endpoint | 1 client MB/s | 16 clients MB/s (aggregate) | server CPU, 16 clients (s per GB) | peak RSS, 16 clients (MiB) | peak RSS, herd (MiB) |")
    p("|---|---:|---:|---:|---:|---:|")
    for ep in peers:
        bad = r.get(f"{ep}.warm16_bad", "0")
        note = f" ({bad} failed)" if bad not in ("0", "") else ""
        p(f"| {LABELS[ep]} | {g(ep, 'warm1')} | {g(ep, 'warm16')}{note} | {g(ep, 'cpu16')} | {g(ep, 'rss16')} | {g(ep, 'rss32')} |")
    p("")


def cold_table(p, r, peers, g, f):
    runs = r.get("cold_runs", "1")
    p("#### Cold blob (empty cache), one client" + (f" (median of {runs} pulls, each on an emptied cache)" if runs != "1" else ""))
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


def cold_checks(check, f):
    """The cold-path targets of issue 10."""
    direct, direct_ttfb, nginx_cpu = f("direct", "cold_total"), f("direct", "cold_ttfb"), f("nginx-tls", "cpucold")
    for ours in ("ours-mirror", "ours-connect"):
        t, ttfb, cpu = f(ours, "cold_total"), f(ours, "cold_ttfb"), f(ours, "cpucold")
        if t and direct:
            check(f"cold pull ≤ 1.25× direct (aim 1.1×), {LABELS[ours]}", t <= 1.25 * direct,
                  f"{t:.2f} s vs {direct:.2f} s, {t / direct:.2f}×")
        if ttfb is not None and direct_ttfb is not None:
            check(f"cold time to first byte ≤ direct + 5 ms, {LABELS[ours]}", ttfb <= direct_ttfb + 0.005,
                  f"{ttfb * 1000:.1f} ms vs {direct_ttfb * 1000:.1f} ms")
        if cpu is not None and nginx_cpu is not None:
            check(f"cold-path CPU per GB below nginx's, {LABELS[ours]}", cpu < nginx_cpu,
                  f"{cpu:.2f} vs {nginx_cpu:.2f} s/GB")


def herd_and_manifest_tables(p, r, peers, g, f):
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



def old_checks(check, r, f):
    """The targets of issues 3 and 7, checked against the figures above."""
    for ours, peer in (("ours-connect", "nginx-tls"), ("ours-mirror", "nginx-http")):
        for key, what in (("warm1", "1 client"), ("warm16", "16 clients")):
            a, b = f(ours, key), f(peer, key)
            if a and b:
                check(f"warm throughput {LABELS[ours]} ≥ {LABELS[peer]}, {what}", a >= b, f"{a:.0f} vs {b:.0f} MB/s")
    for ours in ("ours-mirror", "ours-connect"):
        up, a, b = f(ours, "herd_up"), f(ours, "herd_wall"), f(ours, "herdw_wall")
        if up is not None:
            check(f"herd costs exactly one upstream fetch, {LABELS[ours]}", up == 1, f"{up:.0f}")
        if a and b:
            check(f"herd ≤ 1.25× cached time, {LABELS[ours]}", a <= 1.25 * b, f"{a / b:.2f}×")
        for key, what in (("rss16", "16 clients on the warm blob"), ("rss32", "32-client herd")):
            m = f(ours, key)
            if m:
                check(f"peak RSS < 64 MiB, {LABELS[ours]}, {what}", m < 64, f"{m:.1f} MiB")
    auth_checks(check, r, f)


def auth_table(p, r):
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


def auth_checks(check, r, f):
    if "auth.anon_us" in r:
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


def idle_table(p, r, g, f, check):
    """Many idle keep-alive clients (issue 10, the ours-idle and nginx-idle phases)."""
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


def scale_out(r, p, check):
    """The scale-out phases (issue 9, bench/scale_out.sh), when the run had them."""

    def v(key, fmt="{:g}"):
        x = r.get(key)
        if x in (None, ""):
            return "-"
        try:
            return fmt.format(float(x))
        except ValueError:
            return x

    def num(key):
        try:
            return float(r[key])
        except (KeyError, ValueError):
            return None

    mb = r.get("herd_mb", "?")
    if "bucket.local1" in r or "dists3.warm1" in r:
        p(f"#### Scale-out: a hit from the bucket (local miss) vs a local hit vs distribution on S3 ({mb} MiB layer, moto_server as the S3 server)")
        p("")
        p("| endpoint | cold: total (s) | cold: upstream GETs | 1 client MB/s | 1 client TTFB (s) | 16 clients MB/s (aggregate) | server CPU, 16 clients (s per GB) | upstream GETs while warm | cold: in the bucket after (s) |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        if "bucket.local1" in r:
            p(f"| **registry-proxy, local hit** (disk in front of the bucket) | {v('bucket.cold_total', '{:.2f}')} | {v('bucket.cold_up')} "
              f"| {v('bucket.local1')} | {v('bucket.local_ttfb', '{:.3f}')} | {v('bucket.local16')} | {v('bucket.local16_cpu')} | 0 | {v('bucket.settle')} |")
            p(f"| **registry-proxy, bucket hit** (a replica with an empty disk) | - | - | {v('bucket.bucket1')} | {v('bucket.bucket_ttfb', '{:.3f}')} "
              f"| {v('bucket.bucket16')} | {v('bucket.bucket16_cpu')} | {v('bucket.bucket_up')} | - |")
        if "dists3.warm1" in r:
            p(f"| distribution pull-through, S3 driver (every hit from the bucket) | {v('dists3.cold_total', '{:.2f}')} | {v('dists3.cold_up')} "
              f"| {v('dists3.warm1')} | {v('dists3.warm_ttfb', '{:.3f}')} | {v('dists3.warm16')} | {v('dists3.warm16_cpu')} | {v('dists3.warm_up')} | {v('dists3.settle')} |")
        p("")
        a, b = num("bucket.bucket1"), num("dists3.warm1")
        if a and b:
            check("a registry-proxy bucket hit ≥ distribution's S3-backed hit, 1 client", a >= b, f"{a:.0f} vs {b:.0f} MB/s")
        up = num("bucket.bucket_up")
        if up is not None:
            check("bucket hits on an empty disk make no upstream GET", up == 0, f"{up:.0f}")
    if "replicas.shared.wall" in r:
        p(f"#### Scale-out: 32 clients over three replicas on a cold {mb} MiB blob (11/11/10), then the same 32 once cached")
        p("")
        p("| deployment | upstream blob GETs | cold wall (s) | median TTFB cold (s) | server CPU of the 3, cold (s per GB served) | moto CPU, cold (s) | cached wall (s) | failed |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|")
        for tag, what in (("shared", "**3 registry-proxy replicas, one bucket + PEERS**"), ("independent", "3 independent registry-proxy caches (disk only)")):
            bad = int(num(f"replicas.{tag}.bad") or 0) + int(num(f"replicas.{tag}.wbad") or 0)
            p(f"| {what} | {v(f'replicas.{tag}.up')} | {v(f'replicas.{tag}.wall', '{:.2f}')} | {v(f'replicas.{tag}.ttfb', '{:.3f}')} "
              f"| {v(f'replicas.{tag}.cpu')} | {v(f'replicas.{tag}.moto')} | {v(f'replicas.{tag}.wwall', '{:.2f}')} | {bad} |")
        p("")
        up = num("replicas.shared.up")
        if up is not None:
            check("a herd over three replicas costs exactly one upstream fetch", up == 1, f"{up:.0f}")


if __name__ == "__main__":
    main()
