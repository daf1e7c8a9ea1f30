#!/usr/bin/env python3
"""Write an OCI image layout with one random layer, for the benchmarks.

usage: mkimage.py DIR TAG SIZE_BYTES

The layer is a tar holding one file of SIZE_BYTES random bytes, wrapped in gzip at level 0 (stored
blocks), so the blob is SIZE_BYTES plus a few KiB and no CPU goes into (de)compression.  Several
images may share DIR (index.json is merged).  Prints the layer digest and size.
"""
import gzip
import hashlib
import json
import os
import sys
import tarfile


def write_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


class HashingWriter:
    """File-like sink that hashes (and counts) what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)
        return len(b)

    def flush(self):
        self.f.flush()


def main():
    root, tag, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    tmp = os.path.join(root, "layer.tmp")
    diff = hashlib.sha256()
    with open(tmp, "wb") as raw:
        out = HashingWriter(raw)
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=0, mtime=0) as gz:

            class Tee:
                def write(self, b):
                    diff.update(b)
                    return gz.write(b)

            ti = tarfile.TarInfo("data.bin")
            ti.size, ti.mode, ti.mtime = size, 0o644, 0
            tee = Tee()
            tee.write(ti.tobuf(format=tarfile.GNU_FORMAT))
            left = size
            while left:
                chunk = os.urandom(min(left, 4 << 20))
                tee.write(chunk)
                left -= len(chunk)
            pad = (-size) % 512
            tee.write(b"\0" * (pad + 1024))  # padding + end-of-archive
    layer = "sha256:" + out.h.hexdigest()
    os.rename(tmp, os.path.join(root, "blobs", "sha256", out.h.hexdigest()))

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff.hexdigest()]},
        },
        separators=(",", ":"),
    ).encode()
    cdigest, csize = write_blob(root, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": out.n}],
        },
        separators=(",", ":"),
    ).encode()
    mdigest, msize = write_blob(root, manifest)

    index_path = os.path.join(root, "index.json")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [
        m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdigest,
            "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    with open(index_path, "w") as f:
        json.dump(index, f)
    print(layer, out.n)


if __name__ == "__main__":
    main()
