#!/usr/bin/env python3
"""Generate OCI layouts with random layers (cached in WORKDIR/layouts) and push them with skopeo to the
plain-HTTP registry (127.0.0.1:5000) that shares its storage with every TLS registry; then describe the
stored images in WORKDIR/images.env (shell) and WORKDIR/images.json.

seed.py WORKDIR            (stdlib only; needs skopeo)

Layers are tar files holding one random file, gzip level 0 (stored), so a blob is ~ its chosen size
(+ ~1.5 KiB tar/gzip overhead); the exact blob sizes and digests are written to images.env.
"""
import hashlib, io, json, os, shutil, subprocess, sys, tarfile, time, urllib.request, zlib

PUSH = "127.0.0.1:5000"
KiB, MiB = 1024, 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])

# key: (layout name, [(repo, tag)], skopeo flags, {platform: [layer sizes]})
IMAGES = [
    ("SMALL", "small", [("test/small", "v1")], [], {"linux/amd64": [20 * KiB, 300 * KiB]}),
    ("LIBSMALL", "small", [("library/small", "v1")], [], None),  # same layout as SMALL: same digests
    ("BIG", "big", [("test/big", "v1")], [], {"linux/amd64": [256 * MiB]}),
    ("MULTI", "multi", [("test/multi", "v1")], ["--all"], {"linux/amd64": [100 * KiB], "linux/arm64": [120 * KiB]}),
    ("SCHEMA2", "schema2", [("test/schema2", "v1")], ["--format", "v2s2"], {"linux/amd64": [50 * KiB, 60 * KiB]}),
    ("SECRET", "secret", [("private/secret", "v1")], [], {"linux/amd64": [40 * KiB]}),
]

NOPROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def put_blob(layout, data, media_type, **extra):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data), **extra}


class RandomReader(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left, 4 * MiB)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


class LayerWriter:
    """tar stream -> sha256 (diff_id) -> gzip level 0 -> sha256 + file."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.size = 0
        self.z = zlib.compressobj(0, zlib.DEFLATED, 31)  # 31: gzip framing, mtime 0

    def _out(self, b):
        self.blob.update(b)
        self.size += len(b)
        self.f.write(b)

    def write(self, b):
        self.diff.update(b)
        self._out(self.z.compress(b))
        return len(b)

    def close(self):
        self._out(self.z.flush())
        self.f.close()


def make_layer(layout, name, size):
    tmp = os.path.join(layout, "blobs", "sha256", "tmp-layer")
    w = LayerWriter(tmp)
    with tarfile.open(mode="w|", fileobj=w, format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo(f"data/{name}.bin")
        ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
        t.addfile(ti, io.BufferedReader(RandomReader(size), 4 * MiB))
    w.close()
    d = w.blob.hexdigest()
    os.rename(tmp, os.path.join(layout, "blobs", "sha256", d))
    return {"mediaType": OCI_LAYER, "digest": "sha256:" + d, "size": w.size}, "sha256:" + w.diff.hexdigest()


def make_layout(layout, name, platforms):
    if os.path.exists(os.path.join(layout, "index.json")):
        return
    print(f"seed: generating layout {name}", flush=True)
    tmp = layout + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs", "sha256"))
    manifests = []
    for plat, sizes in platforms.items():
        os_, arch = plat.split("/")
        layers, diff_ids = [], []
        for i, size in enumerate(sizes):
            desc, diff = make_layer(tmp, f"{name}-{arch}-{i}", size)
            layers.append(desc)
            diff_ids.append(diff)
        config = {"architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
                  "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"e2e.image": name}},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids},
                  "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "seed.py"} for _ in sizes]}
        cfg = put_blob(tmp, json.dumps(config).encode(), OCI_CONFIG)
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers}
        manifests.append(put_blob(tmp, json.dumps(m).encode(), OCI_MANIFEST, platform={"architecture": arch, "os": os_}))
    if len(manifests) > 1:
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        top = put_blob(tmp, json.dumps(idx).encode(), OCI_INDEX)
    else:
        top = dict(manifests[0])
        top.pop("platform")
    top["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}, f)
    shutil.rmtree(layout, ignore_errors=True)
    os.rename(tmp, layout)


def get(path, method="GET"):
    req = urllib.request.Request(f"http://{PUSH}{path}", method=method, headers={"Accept": ACCEPT})
    try:
        with NOPROXY.open(req, timeout=30) as r:
            return r.headers, r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None, None
        raise


def describe(prefix, repo, tag, out):
    hdrs, body = get(f"/v2/{repo}/manifests/{tag}")
    m = json.loads(body)
    mt = m.get("mediaType") or hdrs["Content-Type"]
    ref = f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"
    out[prefix] = {"repo": repo, "tag": tag, "ref": ref, "digest": hdrs["Docker-Content-Digest"],
                   "media_type": mt, "size": len(body)}
    if "manifests" in m:
        out[prefix]["platforms"] = []
        for c in m["manifests"]:
            arch = c["platform"]["architecture"]
            describe(f"{prefix}_{arch.upper()}", repo, c["digest"], out)
            out[f"{prefix}_{arch.upper()}"]["tag"] = ""
            out[prefix]["platforms"].append(f"{c['platform']['os']}/{arch}")
    else:
        out[prefix]["config_digest"] = m["config"]["digest"]
        out[prefix]["layers"] = [{"digest": l["digest"], "size": l["size"]} for l in m["layers"]]


def main():
    work = os.path.abspath(sys.argv[1])
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    out = {}
    for prefix, name, refs, flags, platforms in IMAGES:
        layout = os.path.join(work, "layouts", name)
        if platforms:
            t0 = time.time()
            make_layout(layout, name, platforms)
            if time.time() - t0 > 1:
                print(f"seed: layout {name} took {time.time() - t0:.1f}s", flush=True)
        for repo, tag in refs:
            stamp = os.path.join(layout, "pushed-" + repo.replace("/", "_") + "-" + tag)
            hdrs, _ = get(f"/v2/{repo}/manifests/{tag}", "HEAD")
            if hdrs is None or not os.path.exists(stamp) or open(stamp).read() != hdrs["Docker-Content-Digest"]:
                print(f"seed: pushing {repo}:{tag}", flush=True)
                subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", *flags,
                                f"oci:{layout}:v1", f"docker://{PUSH}/{repo}:{tag}"], check=True, env=env)
                hdrs, _ = get(f"/v2/{repo}/manifests/{tag}", "HEAD")
                with open(stamp, "w") as f:
                    f.write(hdrs["Docker-Content-Digest"])
            describe(prefix, repo, tag, out)
    lines = ["# generated by tests/e2e/env/seed.py; all images exist in every registry (shared storage)"]
    for p, d in out.items():
        for k in ("repo", "tag", "ref", "digest", "media_type", "size", "config_digest"):
            if k in d:
                lines.append(f"{p}_{k.upper()}='{d[k]}'")
        if "platforms" in d:
            lines.append(f"{p}_PLATFORMS='{' '.join(d['platforms'])}'")
        if "layers" in d:
            lines.append(f"{p}_LAYERS='{' '.join(l['digest'] + ':' + str(l['size']) for l in d['layers'])}'")
            for i, l in enumerate(d["layers"]):
                lines.append(f"{p}_LAYER{i}_DIGEST='{l['digest']}'")
                lines.append(f"{p}_LAYER{i}_SIZE={l['size']}")
    for name, path in (("images.env", "\n".join(lines) + "\n"), ("images.json", json.dumps(out, indent=1) + "\n")):
        with open(os.path.join(work, name + ".tmp"), "w") as f:
            f.write(path)
        os.rename(os.path.join(work, name + ".tmp"), os.path.join(work, name))


if __name__ == "__main__":
    main()
