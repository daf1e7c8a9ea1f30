#!/usr/bin/env python3
"""Test token server for the distribution registry's token auth (Docker Registry v2 token spec).

token_server.py --cert SIGN.crt --key SIGN.key --log FILE --listen HOST:PORT:TLSCERT:TLSKEY [--listen ...]

GET  /token?service=S&scope=repository:NAME:pull[,push] (scope may repeat; optional Basic auth)
POST /token  form: grant_type=password|refresh_token, service, scope, username, password, refresh_token
Answer: {"token","access_token","expires_in","issued_at"} (+ "refresh_token" for POST / offline_token=true).
Policy (see POLICY): unknown service -> 400; bad credentials -> 401; anonymous -> per-service default.
Every request is logged as one line to --log (never a password or token).
"""
import argparse, base64, json, os, ssl, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ISSUER = "registry-proxy-e2e-token-server"
EXPIRES_IN = int(os.environ.get("TOKEN_EXPIRES_IN", "300"))
# service -> {"users": {user: (password, allowed actions)}, "anonymous": allowed actions}
POLICY = {
    # dave is a valid token.test user without any access (tokens for him grant nothing)
    "token.test": {"users": {"bob": ("s3cret-token", {"pull"}), "dave": ("s3cret-dave", set())},
                   "anonymous": set()},
    "registry.docker.io": {"users": {"carol": ("s3cret-hub", {"pull"})}, "anonymous": {"pull"}},
}
REFRESH = {}  # refresh token -> (service, user)
LOCK = threading.Lock()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scopes(values):
    """'repository:a/b:pull,push' (repeated and/or space-separated) -> [(type, name, [actions])]."""
    out = []
    for v in values:
        for s in v.split():
            parts = s.split(":")
            if len(parts) < 3:
                continue
            out.append((parts[0], ":".join(parts[1:-1]), [a for a in parts[-1].split(",") if a]))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # silence the default stderr access log
        pass

    def reply(self, code, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_line(self, **kv):
        kv = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": self.headers.get("Host", ""),
              "method": self.command, "path": urlsplit(self.path).path, **kv}
        line = " ".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (list, dict)) else v}" for k, v in kv.items())
        with LOCK, open(self.server.args.log, "a") as f:
            f.write(line + "\n")

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path == "/healthz":
            return self.reply(200, {"ok": True})
        q = parse_qs(u.query)
        user = password = None
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except Exception:
                return self.fail(400, "malformed basic auth", grant="basic")
        self.issue(u.path, q.get("service", [""])[0], parse_scopes(q.get("scope", [])), user, password,
                   "basic" if user is not None else "anonymous", q.get("offline_token", [""])[0] == "true")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        f = parse_qs(self.rfile.read(n).decode(), keep_blank_values=True)
        g = lambda k: f.get(k, [""])[0]
        grant, service, scopes = g("grant_type"), g("service"), parse_scopes(f.get("scope", []))
        if grant == "password":
            return self.issue(urlsplit(self.path).path, service, scopes, g("username"), g("password"), grant, True)
        if grant == "refresh_token":
            svc_user = REFRESH.get(g("refresh_token"))
            if not svc_user or svc_user[0] != service:
                return self.fail(401, "invalid refresh token", grant=grant, service=service)
            return self.issue(urlsplit(self.path).path, service, scopes, svc_user[1], None, grant, True, trusted=True)
        return self.fail(400, "unsupported grant_type", grant=grant)

    def fail(self, code, msg, **kv):
        self.log_line(status=code, error=json.dumps(msg), **kv)
        hdrs = [("WWW-Authenticate", 'Basic realm="token"')] if code == 401 else []
        self.reply(code, {"errors": [{"code": "UNAUTHORIZED" if code == 401 else "DENIED", "message": msg}]}, hdrs)

    def issue(self, path, service, scopes, user, password, grant, want_refresh, trusted=False):
        if path != "/token":
            return self.fail(404, "not found")
        pol = POLICY.get(service)
        if pol is None:
            return self.fail(400, "unknown service", service=service, grant=grant)
        if user:
            entry = pol["users"].get(user)
            if entry is None or (not trusted and entry[0] != password):
                return self.fail(401, "invalid credentials", service=service, user=user, grant=grant)
            allowed = entry[1]
        else:
            allowed = pol["anonymous"]
        access = []
        for typ, name, actions in scopes:
            granted = [a for a in actions if typ == "repository" and (a in allowed or "*" in allowed)]
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": service, "exp": now + EXPIRES_IN, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.server.args.x5c]}
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        sig = self.server.args.signing_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        token = signing_input.decode() + "." + b64url(sig)
        resp = {"token": token, "access_token": token, "expires_in": EXPIRES_IN,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        if user and want_refresh:
            rt = uuid.uuid4().hex
            REFRESH[rt] = (service, user)
            resp["refresh_token"] = rt
        self.log_line(status=200, service=service, user=user or "-", grant=grant,
                      scope=[f"{t}:{n}:{','.join(a)}" for t, n, a in scopes],
                      granted=[f"{a['name']}:{','.join(a['actions'])}" for a in access])
        self.reply(200, resp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True, help="signing certificate (PEM), also the registries' rootcertbundle")
    ap.add_argument("--key", required=True, help="signing RSA key (PEM)")
    ap.add_argument("--log", required=True)
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT:TLSCERT:TLSKEY")
    args = ap.parse_args()
    with open(args.cert, "rb") as f:
        args.x5c = base64.b64encode(x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)).decode()
    with open(args.key, "rb") as f:
        args.signing_key = serialization.load_pem_private_key(f.read(), password=None)
    servers = []
    for spec in args.listen:
        host, port, cert, key = spec.split(":", 3)
        srv = ThreadingHTTPServer((host, int(port)), Handler)
        srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        # handshake lazily in the handler thread, so a stuck client cannot block accept()
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        srv.args = args
        servers.append(srv)
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("token server listening on", ", ".join(s.split(":")[0] + ":" + s.split(":")[1] for s in args.listen), flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    sys.exit(main())
