"""The node lock's bound: how long an importer (or prune) waits for another on its node."""

from __future__ import annotations

import helm_python
import pytest

from chartlib import ENABLED, env_of, job, merge, render


def prune_job(values: dict) -> dict:
    docs = render(merge(ENABLED, {"imagePull": merge({"prune": {"enabled": True}}, values)}))
    return next(d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "image-prune")


def test_should_wait_for_the_node_lock_half_the_jobs_deadline_by_default():
    # The default deadline is 240 s (4 GiB): an importer that waited 120 s has 120 s left.
    assert env_of(job())["LOCK_TIMEOUT"] == "120"
    assert env_of(job({"imagePull": {"bundleGiB": 40}}))["LOCK_TIMEOUT"] == str((120 + 40 * 30) // 2)
    assert env_of(job({"imagePull": {"activeDeadlineSeconds": 3600}}))["LOCK_TIMEOUT"] == "1800"


def test_should_pass_the_lock_timeout_the_values_give_to_import_and_prune():
    values = {"imagePull": {"lockTimeoutSeconds": 45}}
    assert env_of(job(values))["LOCK_TIMEOUT"] == "45"
    assert env_of(prune_job(values["imagePull"]))["LOCK_TIMEOUT"] == "45"
    assert env_of(job({"imagePull": {"lockTimeoutSeconds": 0}}))["LOCK_TIMEOUT"] == "0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "at '/imagePull/lockTimeoutSeconds': minimum: got -1, want 0"),
        (86401, "at '/imagePull/lockTimeoutSeconds': maximum: got 86,401, want 86,400"),
        ("5m", "at '/imagePull/lockTimeoutSeconds'"),
    ],
    ids=["negative", "over-a-day", "string"],
)
def test_should_refuse_a_lock_timeout_out_of_range(value, expected):
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(merge(ENABLED, {"imagePull": {"lockTimeoutSeconds": value}}))
    assert expected in str(caught.value)
