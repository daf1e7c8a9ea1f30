#!/usr/bin/env python3
"""Serves a directory over HTTPS for tests (GET and HEAD, no Range): a stand-in upstream registry
whose files sit at their registry paths (DIR/v2/REPO/blobs/sha256:HEX). Logs one line per request to
LOG: `host=HOST method=M path=P status=S`. Listens on 127.0.0.1, port 0; writes the port to PORT_FILE.

    static_https.py CERT KEY DIR LOG PORT_FILE
"""
import http.server
import os
import ssl
import sys


def main():
    cert, key, root, log_path, port_file = sys.argv[1:6]
    log = open(log_path, "a", buffering=1)

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def guess_type(self, path):
            return "application/octet-stream"

        def log_request(self, code="-", size="-"):
            host = self.headers.get("Host", "-") if self.headers else "-"
            log.write(f"host={host} method={self.command} path={self.path} status={code}\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
