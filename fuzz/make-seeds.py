#!/usr/bin/env python3
"""Write small seed archives for the `inspect` fuzz target into corpus/inspect/:
a legacy docker-archive, an OCI layout, the docker 25+ dual layout, and their gzip (one and
two members) and zstd (one and two frames, written by the `zstd` command) forms."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile


def tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


layer = tar([("hello.txt", b"hi\n")])
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(layer)]}}).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + sha(layer), "size": len(layer)}],
}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + sha(manifest), "size": len(manifest),
    "annotations": {"io.containerd.image.name": "docker.io/library/demo:1",
                    "org.opencontainers.image.ref.name": "1"},
    "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
blobs = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
         ("blobs/sha256/" + sha(layer), layer),
         ("blobs/sha256/" + sha(config), config),
         ("blobs/sha256/" + sha(manifest), manifest),
         ("index.json", index)]
legacy = tar([("abc/layer.tar", layer), (sha(config) + ".json", config),
              ("manifest.json", json.dumps([{"Config": sha(config) + ".json", "RepoTags": ["demo:1"],
                                             "Layers": ["abc/layer.tar"]}]).encode()),
              ("repositories", b"{}")])
oci = tar(blobs)
dual = tar(blobs + [("manifest.json", json.dumps([{
    "Config": "blobs/sha256/" + sha(config), "RepoTags": ["demo:1"],
    "Layers": ["blobs/sha256/" + sha(layer)]}]).encode())])



def zstd(data):
    """zstd-compress with the real `zstd` command (Debian's zstd package)."""
    return subprocess.run(["zstd", "-q", "-c", "-"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "inspect")
os.makedirs(out, exist_ok=True)
for name, data in [("legacy", legacy), ("oci", oci), ("dual", dual),
                   ("legacy-gz", gzip.compress(legacy)), ("oci-gz", gzip.compress(oci)),
                   ("dual-gz-2", gzip.compress(dual[:1024]) + gzip.compress(dual[1024:])),
                   ("legacy-zst", zstd(legacy)), ("oci-zst", zstd(oci)),
                   ("dual-zst-2", zstd(dual[:1024]) + zstd(dual[1024:]))]:
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
