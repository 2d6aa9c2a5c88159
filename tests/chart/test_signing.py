"""imagePull.verify: the import Job checks the bundle's signature (`import --verify-key`) with a
cosign public key given as PEM text (a hook ConfigMap of the chart's own), or as an existing
ConfigMap or Secret. Rendered with the real Helm engine; the rendered Job's container run as
the kubelet would (test_job_container.run_like_kubelet) on the real dockerd, refusing four bad
bundles with nothing imported (an archive changed, unsigned, `images.json` changed, signed by
another key), and taking the signed one.

No Kubernetes runs here: the kubelet projects a ConfigMap volume's items as files, which the
test does by writing the rendered ConfigMap's data into a directory bound in its place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chartlib import ENABLED, container, job, merge, render
from test_job_container import (  # noqa: F401  (fixtures)
    ENV,
    NAMESPACE,
    bundle,
    containerd,
    importer_image,
    job_values,
    run_like_kubelet,
)

PUB = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyBe6yFRSDI0M7herCjTrklbB4uah
M+XfF3daFEAqz+MtfHxkbnLKYublv9+2jeYZWPNJ80tIaK7cWDdzeTDRBw==
-----END PUBLIC KEY-----
"""


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def verify_volume(jb: dict[str, Any]) -> dict[str, Any] | None:
    return next((v for v in jb["spec"]["template"]["spec"]["volumes"] if v["name"] == "verify-key"), None)


def test_a_public_key_becomes_a_hook_configmap_mounted_into_the_job_and_passed_as_verify_key():
    docs = render(merge(ENABLED, {"imagePull": {"verify": {"publicKey": PUB}}}))
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["data"]["cosign.pub"].strip() == PUB.strip()
    jb = job(merge(ENABLED, {"imagePull": {"verify": {"publicKey": PUB}}}))
    hooks = cm["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Made before the Job that mounts it.
    assert int(hooks["helm.sh/hook-weight"]) < int(jb["metadata"]["annotations"]["helm.sh/hook-weight"])
    c = container(jb)
    assert "--verify-key=/verify-key/cosign.pub" in c["args"]
    assert {"name": "verify-key", "mountPath": "/verify-key", "readOnly": True} in c["volumeMounts"]
    assert verify_volume(jb)["configMap"]["name"] == cm["metadata"]["name"]


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_an_existing_configmap_or_secret_is_mounted_and_no_configmap_is_made(source):
    values = merge(ENABLED, {"imagePull": {"verify": {source: "site-keys", "key": "bundle.pub"}}})
    assert not of_kind(render(values), "ConfigMap")
    jb = job(values)
    assert "--verify-key=/verify-key/bundle.pub" in container(jb)["args"]
    volume = verify_volume(jb)
    name = volume["configMap"]["name"] if source == "configMap" else volume["secret"]["secretName"]
    assert name == "site-keys"
    items = (volume.get("configMap") or volume.get("secret"))["items"]
    assert items == [{"key": "bundle.pub", "path": "bundle.pub"}]


def test_without_a_key_the_bundle_is_not_checked_and_the_prune_job_never_mounts_one():
    jb = job(ENABLED)
    assert not any(a.startswith("--verify-key") for a in container(jb)["args"])
    assert verify_volume(jb) is None
    docs = render(merge(ENABLED, {"imagePull": {"verify": {"publicKey": PUB}, "prune": {"enabled": True}}}))
    prune = [d for d in of_kind(docs, "Job") if "prune" in d["metadata"]["name"]]
    assert prune and verify_volume(prune[0]) is None
    assert not any(a.startswith("--verify-key") for a in container(prune[0])["args"])


def test_two_key_sources_and_a_key_that_is_not_pem_are_refused():
    with pytest.raises(Exception, match="give one of publicKey, configMap and secret, not configMap and secret"):
        render(merge(ENABLED, {"imagePull": {"verify": {"configMap": "a", "secret": "b"}}}))
    with pytest.raises(Exception, match="publicKey"):
        render(merge(ENABLED, {"imagePull": {"verify": {"publicKey": "ssh-ed25519 AAAA"}}}))


# ---- the rendered Job's container on the real dockerd ----------------------------------------

def exporter() -> str:
    binary = os.environ.get("OI_STATIC_BIN")
    if not binary:
        pytest.skip("needs OI_STATIC_BIN, the connected side's binary (scripts/test.sh builds it)")
    return binary


def openssl_keys(directory: Path) -> tuple[Path, str]:
    """An ECDSA P-256 key pair made by openssl: the PKCS#8 private key's path, the public PEM."""
    key = directory / "bundle.key"
    pem = subprocess.run(
        "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt",
        shell=True, check=True, capture_output=True,
    ).stdout
    key.write_bytes(pem)
    public = subprocess.run(["openssl", "pkey", "-pubout", "-in", str(key)], check=True, capture_output=True).stdout
    return key, public.decode()


def signed_bundle(source: dict[str, Any], key: Path, directory: Path) -> Path:
    """The fixture bundle's image exported from the test dockerd as a signed archive bundle (its
    registry does not exist: the auto engine takes it from the dockerd's store)."""
    env = dict(os.environ, DOCKER_HOST=os.environ["OI_DOCKER_HOST"], XDG_CACHE_HOME=str(directory / "cache"))
    env["PATH"] = f"{Path(os.environ['OI_DOCKER_CLI']).parent}:{env['PATH']}"
    out = directory / "signed"
    done = subprocess.run(
        [exporter(), "export", "--engine", "auto", "--format", "archives", "--no-importer-binary",
         "--sign-key", str(key), "--output", str(out), source["ref"]],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / ".offline-images" / "bundle.identity.sig").is_file(), done.stderr
    return out


def run_with_key(jb: dict[str, Any], public: str, directory: Path, node) -> tuple[int, str]:
    """The Job run as the kubelet would, its ConfigMap volume projected into a directory."""
    projected = directory / "projected"
    projected.mkdir(exist_ok=True)
    volume = verify_volume(jb)
    item = volume["configMap"]["items"][0]
    (projected / item["path"]).write_text(public)
    volume.pop("configMap")
    volume["hostPath"] = {"path": str(projected), "type": "Directory"}
    return run_like_kubelet(jb, node=node)


@pytest.mark.skipif(not all(os.environ.get(name) for name in ENV),
                    reason=f"needs the daemons of scripts/test.sh ({', '.join(ENV)})")
def test_the_job_refuses_four_bad_bundles_and_imports_the_signed_one(
        importer_image, bundle, containerd, tmp_path):
    key, public = openssl_keys(tmp_path)
    signed = signed_bundle(bundle, key, tmp_path)
    tampered = tmp_path / "tampered"
    shutil.copytree(signed, tampered)
    archive = next(p for p in tampered.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tar.zst")))
    with archive.open("ab") as f:
        f.write(b"\0" * 512)
    unsigned = tmp_path / "unsigned"
    shutil.copytree(signed, unsigned)
    shutil.rmtree(unsigned / ".offline-images")
    changed = tmp_path / "images-json-changed"
    shutil.copytree(signed, changed)
    with (changed / "images.json").open("a") as f:
        f.write(" ")
    other_key = tmp_path / "other-key"
    shutil.copytree(signed, other_key)
    (tmp_path / "other-key-pair").mkdir()
    other, _ = openssl_keys(tmp_path / "other-key-pair")
    sig = subprocess.run(
        f"openssl dgst -sha256 -sign {other} {other_key / '.offline-images' / 'bundle.identity'} | base64 -w0",
        shell=True, check=True, capture_output=True,
    ).stdout
    (other_key / ".offline-images" / "bundle.identity.sig").write_bytes(sig)
    cases = [
        (tampered, f"{archive.name} does not match SHA256SUMS"),
        (unsigned, "refused: the bundle is not signed"),
        (changed, "images.json: refused: its sha256 is"),
        (other_key, "bundle.identity.sig: refused: the signature of"),
    ]
    for directory, reason in cases:
        namespace = f"{NAMESPACE}-signing-{directory.name}"
        values = merge(job_values(importer_image, {"dir": directory}, containerd),
                       {"imagePull": {"containerdNamespace": namespace, "verify": {"publicKey": public}}})
        code, log = run_with_key(job(values), public, tmp_path, containerd)
        assert code == 2, f"{directory.name}: refused with exit 2:\n{log}"
        assert reason in log, f"{directory.name}: {reason!r} in:\n{log}"
        assert containerd.ctr_run(namespace, "images", "ls", "-q").split() == [], directory.name
    namespace = f"{NAMESPACE}-signing-good"
    values = merge(job_values(importer_image, {"dir": signed}, containerd),
                   {"imagePull": {"containerdNamespace": namespace, "verify": {"publicKey": public}}})
    code, log = run_with_key(job(values), public, tmp_path, containerd)
    assert code == 0, log
    assert "signature verified with /verify-key/cosign.pub" in log, log
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()
