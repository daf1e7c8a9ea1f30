#!/usr/bin/env python3
"""Many idle keep-alive clients: open N connections, send one request on each and read its
response whole (HTTP/1.1 keep-alive, Content-Length), then hold them all open and silent.

usage: idle.py HOST PORT PATH N [HEADER: VALUE ...]

Prints "ready OPEN FAILED" once every connection has had its answer (or failed), then waits until
stdin closes (or a line is read), checks how many connections the server kept open, prints
"closed-by-server K" and closes the rest. Needs `ulimit -n` above N.
"""
import asyncio
import sys

# Connections opened at the same time: enough to be quick, few enough not to overflow the
# listener's backlog.
PARALLEL = 200


async def one(host, port, request, keep, sem):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            if status != b"200":
                writer.close()
                return False
            keep.append((reader, writer))
            return True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False


async def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    headers = "".join(f"{h}\r\n" for h in sys.argv[5:])
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()
    keep, sem = [], asyncio.Semaphore(PARALLEL)
    results = await asyncio.gather(*(one(host, port, request, keep, sem) for _ in range(n)))
    ok = sum(results)
    print(f"ready {ok} {n - ok}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # The event loop has seen the end of every connection the server closed.
    await asyncio.sleep(0.5)
    closed = sum(1 for reader, _ in keep if reader.at_eof())
    print(f"closed-by-server {closed}", flush=True)
    for _, writer in keep:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
