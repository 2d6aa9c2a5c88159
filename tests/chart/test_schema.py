"""values.schema.json: bad values fail at install time with a message naming the value."""

from __future__ import annotations

import json

import helm_python
import pytest

from chartlib import CHART, ENABLED, env_of, job, merge, render, volume


def rejection(values):
    """The message Helm gives when it refuses `values` (the install would stop here)."""
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(values)
    return str(caught.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"jobs": "4"}, "at '/imagePull/jobs': got string, want integer"),
        ({"strict": "yes"}, "at '/imagePull/strict': got string, want boolean"),
        ({"enabled": "true"}, "at '/imagePull/enabled': got string, want boolean"),
        ({"nodeSelector": ["node-1"]}, "at '/imagePull/nodeSelector': got array, want object"),
        ({"extraArgs": "--force"}, "at '/imagePull/extraArgs': got string, want array"),
        ({"importerImage": {"tag": 1.2}}, "at '/imagePull/importerImage/tag': got number, want string"),
        ({"ttlSecondsAfterFinished": "1h"}, "at '/imagePull/ttlSecondsAfterFinished'"),
        ({"hook": {"keepSucceededJobs": "yes"}}, "at '/imagePull/hook/keepSucceededJobs': got string, want boolean"),
    ],
    ids=["jobs", "strict", "enabled", "nodeSelector", "extraArgs", "tag", "ttl", "keepSucceededJobs"],
)
def test_a_value_of_the_wrong_type_is_rejected_with_its_path(values, expected):
    message = rejection(merge(ENABLED, {"imagePull": values}))
    assert "offline-images" in message
    assert expected in message


@pytest.mark.parametrize(
    ("values", "where", "key"),
    [
        ({"jobz": 2}, "/imagePull", "jobz"),
        ({"importerImage": {"registry": "r.local"}}, "/imagePull/importerImage", "registry"),
        ({"hook": {"wieght": 1}}, "/imagePull/hook", "wieght"),
        ({"serviceAccount": {"annotations": {}}}, "/imagePull/serviceAccount", "annotations"),
    ],
    ids=["imagePull", "importerImage", "hook", "serviceAccount"],
)
def test_an_unknown_key_under_image_pull_is_rejected_by_name(values, where, key):
    message = rejection(merge(ENABLED, {"imagePull": values}))
    assert f"at '{where}': additional properties '{key}' not allowed" in message


def test_an_unknown_key_is_rejected_even_when_the_import_is_disabled():
    assert "additional properties 'enable' not allowed" in rejection({"imagePull": {"enable": True}})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"runtime": "cri-o"}, "at '/imagePull/runtime': value must be one of 'auto', 'containerd', 'docker', 'crio'"),
        ({"logFormat": "yaml"}, "at '/imagePull/logFormat': value must be one of 'text', 'json'"),
        ({"importerImage": {"pullPolicy": "Sometimes"}}, "at '/imagePull/importerImage/pullPolicy': value must be one of"),
        ({"imagesVolume": {"type": "iscsi"}}, "at '/imagePull/imagesVolume/type': value must be one of"),
    ],
    ids=["runtime", "logFormat", "pullPolicy", "imagesVolume"],
)
def test_a_value_outside_its_enum_is_rejected_with_the_allowed_ones(values, expected):
    assert expected in rejection(merge(ENABLED, {"imagePull": values}))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"jobs": -1}, "at '/imagePull/jobs': minimum: got -1, want 0"),
        ({"jobs": 65}, "at '/imagePull/jobs': maximum: got 65, want 64"),
        ({"backoffLimit": -1}, "at '/imagePull/backoffLimit': minimum: got -1, want 0"),
        ({"activeDeadlineSeconds": 0}, "at '/imagePull/activeDeadlineSeconds': minimum: got 0, want 1"),
        ({"ttlSecondsAfterFinished": -5}, "at '/imagePull/ttlSecondsAfterFinished': minimum: got -5, want 1"),
    ],
    ids=["jobs-minus-1", "jobs-65", "backoffLimit", "activeDeadlineSeconds", "ttl"],
)
def test_a_number_out_of_range_is_rejected_with_the_bound(values, expected):
    assert expected in rejection(merge(ENABLED, {"imagePull": values}))


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"imagesPath": "images"}, "/imagePull/imagesPath"),
        ({"containerdAddress": "run/containerd.sock"}, "/imagePull/containerdAddress"),
        ({"dockerHost": "tcp://10.0.0.1:2375"}, "/imagePull/dockerHost"),
        ({"containerdNamespace": "k8s io"}, "/imagePull/containerdNamespace"),
        ({"hook": {"deletePolicy": "never"}}, "/imagePull/hook/deletePolicy"),
    ],
    ids=["relative-imagesPath", "relative-socket", "tcp-docker-host", "namespace", "deletePolicy"],
)
def test_a_malformed_path_or_name_is_rejected(values, where):
    message = rejection(merge(ENABLED, {"imagePull": values}))
    assert f"at '{where}'" in message and "does not match pattern" in message


def test_an_nfs_volume_without_server_and_path_is_rejected():
    message = rejection(merge(ENABLED, {"imagePull": {"imagesVolume": {"type": "nfs"}}}))
    assert "at '/imagePull/imagesVolume/nfs/server': minLength" in message
    assert "at '/imagePull/imagesVolume/nfs/path': minLength" in message


def test_a_claim_volume_without_a_claim_name_is_rejected():
    message = rejection(merge(ENABLED, {"imagePull": {"imagesVolume": {"type": "persistentVolumeClaim"}}}))
    assert "at '/imagePull/imagesVolume/persistentVolumeClaim/claimName': minLength" in message


def test_an_extra_env_entry_needs_a_name():
    message = rejection(merge(ENABLED, {"imagePull": {"extraEnv": [{"value": "1"}]}}))
    assert "at '/imagePull/extraEnv/0': missing property 'name'" in message


def test_the_defaults_pass_the_schema():
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
        chart.validate_schema(merge(chart.values, ENABLED))


def test_the_schema_no_longer_says_an_empty_containerd_address_probes_where_it_means_the_default_socket():
    # It said "or empty to probe"; with the native client and containerd chosen, empty means
    # /run/containerd/containerd.sock, and the Job mounts that socket alone.
    schema = json.loads((CHART / "values.schema.json").read_text())
    said = schema["properties"]["imagePull"]["properties"]["containerdAddress"]["description"]
    assert "empty to probe" not in said
    assert "Empty: /run/containerd/containerd.sock where containerd is chosen (runtime containerd" in said
    chosen = job({"imagePull": {"runtime": "containerd"}})
    assert env_of(chosen)["CONTAINERD_ADDRESS"] == "/run/containerd/containerd.sock"
    assert volume(chosen, "runtime-socket")["hostPath"]["path"] == "/run/containerd/containerd.sock"
    # "with runtime auto otherwise, the usual sockets under /run are probed".
    assert "with runtime auto otherwise, the usual sockets under /run are probed" in said
    probing = job()
    assert "CONTAINERD_ADDRESS" not in env_of(probing) and env_of(probing)["IMAGE_RUNTIME"] == "auto"
    assert volume(probing, "node-run")["hostPath"]["path"] == "/run"
