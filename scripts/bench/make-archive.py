#!/usr/bin/env python3
"""Write a docker-archive (docker save layout) with one layer of SIZE bytes, for benchmarks.

usage: make-archive.py OUT.tar SIZE_MB REPO:TAG

The layer holds one file of data that does not compress (so a gzip of the archive is as
large as the archive, like real binaries), made from a 1 MiB random block repeated: deflate
only looks back 32 KiB, so it cannot see the repetition. Nothing is held in memory but that
block; the layer is streamed into the archive from a temp file beside OUT.
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import time

MiB = 1 << 20


def stream_file(tar, name, size, block):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755
    info.mtime = 0

    class Reader(io.RawIOBase):
        left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left, len(block))
            b[:n] = block[:n]
            self.left -= n
            return n

    tar.addfile(info, io.BufferedReader(Reader(), MiB))


def main():
    out, size_mb, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    block = os.urandom(MiB)
    layer_path = out + ".layer.tmp"
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as layer:
        stream_file(layer, "data/blob.bin", size_mb * MiB, block)
    h = hashlib.sha256()
    with open(layer_path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * MiB), b""):
            h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "config": {"Cmd": ["/data/blob.bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "make-archive.py"}],
    }, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    layer_dir = h.hexdigest()
    manifest = json.dumps([{"Config": config_hex + ".json", "RepoTags": [ref],
                            "Layers": [layer_dir + "/layer.tar"]}]).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(layer_dir + "/layer.tar")
        info.size = os.path.getsize(layer_path)
        with open(layer_path, "rb") as f:
            tar.addfile(info, f)
        for name, data in ((config_hex + ".json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.unlink(layer_path)
    print("sha256:" + config_hex)


if __name__ == "__main__":
    main()
