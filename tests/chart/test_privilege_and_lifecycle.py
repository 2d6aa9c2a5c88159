"""Least privilege (what of the node the pod sees, what it may do, what it runs) and the
lifecycle of the hook objects (deleted on success, kept on failure, deadlines, revisions)."""

from __future__ import annotations

import helm_python
import kubernetes_validate
import pytest
import yaml

from chartlib import ENABLED, KUBE_VERSION, container, env_of, job, merge, mount, notes, only, render, volume

DIGEST = "sha256:" + "ab" * 32


def volumes(jb):
    return {v["name"]: v for v in jb["spec"]["template"]["spec"]["volumes"]}


# ---- what of the node the pod sees ---------------------------------------------------------------


def test_the_ctr_client_sees_the_node_root_read_only_recursively_where_possible():
    jb = job({"imagePull": {"containerdClient": "ctr"}})
    assert mount(jb, "/host")["recursiveReadOnly"] == "IfPossible"
    assert mount(jb, "/images")["recursiveReadOnly"] == "IfPossible"
    assert container(jb)["securityContext"]["capabilities"]["add"] == ["SYS_CHROOT"]
    # The client is said, so the importer uses the node's ctr as the value promises.
    assert env_of(jb)["CONTAINERD_CLIENT"] == "ctr"


def test_recursive_read_only_can_be_left_out():
    jb = job({"imagePull": {"containerdClient": "ctr", "recursiveReadOnly": ""}})
    assert "recursiveReadOnly" not in mount(jb, "/host")
    assert "recursiveReadOnly" not in mount(jb, "/images")


def test_for_docker_only_the_docker_socket_is_mounted_and_no_capability_is_added():
    jb = job({"imagePull": {"runtime": "docker", "dockerHost": "unix:///run/docker.sock"}})
    assert set(volumes(jb)) == {"images", "runtime-socket", "tmp"}
    assert volume(jb, "runtime-socket")["hostPath"] == {"path": "/run/docker.sock", "type": "Socket"}
    assert mount(jb, "/host/run/docker.sock")["readOnly"] is True
    assert "add" not in container(jb)["securityContext"]["capabilities"]
    assert container(jb)["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = env_of(jb)
    assert env["HOST_ROOT"] == "/host" and env["IMAGE_RUNTIME"] == "docker"
    assert env["DOCKER_HOST"] == "unix:///run/docker.sock"


def test_the_default_docker_socket_is_the_one_mounted_without_a_docker_host_value():
    jb = job({"imagePull": {"runtime": "docker"}})
    assert volume(jb, "runtime-socket")["hostPath"]["path"] == "/var/run/docker.sock"
    assert mount(jb, "/host/var/run/docker.sock")


@pytest.mark.parametrize(
    ("address", "expected"),
    [("", "/run/containerd/containerd.sock"), ("/run/k3s/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock")],
)
def test_the_native_containerd_client_mounts_only_the_socket_and_containerds_root_read_only(address, expected):
    jb = job({"imagePull": {"runtime": "containerd", "containerdClient": "native", "containerdAddress": address}})
    assert set(volumes(jb)) == {"images", "runtime-socket", "containerd-root", "tmp"}
    assert volume(jb, "runtime-socket")["hostPath"] == {"path": expected, "type": "Socket"}
    # The disk preflight's statfs alone: the root, read-only, nothing else of the node.
    assert volume(jb, "containerd-root")["hostPath"] == {"path": "/var/lib/containerd", "type": "Directory"}
    assert mount(jb, "/host/var/lib/containerd")["readOnly"] is True
    env = env_of(jb)
    assert "NO_DISK_PREFLIGHT" not in env
    assert env["CONTAINERD_CLIENT"] == "native"
    assert env["CONTAINERD_ADDRESS"] == expected
    assert env["IMAGE_RUNTIME"] == "containerd"
    assert "add" not in container(jb)["securityContext"]["capabilities"]
    kubernetes_validate.validate(jb, KUBE_VERSION, strict=True)


def test_the_native_client_without_a_containerd_root_mounts_only_the_socket_and_skips_the_preflight():
    jb = job({"imagePull": {"runtime": "containerd", "containerdClient": "native", "containerdRoot": ""}})
    assert set(volumes(jb)) == {"images", "runtime-socket", "tmp"}
    assert env_of(jb)["NO_DISK_PREFLIGHT"] == "true"


def test_runtime_auto_without_a_containerd_root_mounts_only_the_nodes_run_and_skips_the_preflight():
    jb = job({"imagePull": {"containerdRoot": ""}})
    assert set(volumes(jb)) == {"images", "node-run", "tmp"}
    assert env_of(jb)["NO_DISK_PREFLIGHT"] == "true"


@pytest.mark.parametrize("client", ["native", "ctr"])
def test_with_the_docker_runtime_the_containerd_client_does_not_matter(client):
    jb = job({"imagePull": {"containerdClient": client, "runtime": "docker"}})
    assert set(volumes(jb)) == {"images", "runtime-socket", "tmp"}
    assert volume(jb, "runtime-socket")["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    env = env_of(jb)
    assert env["IMAGE_RUNTIME"] == "docker"
    assert "CONTAINERD_ADDRESS" not in env
    assert "add" not in container(jb)["securityContext"]["capabilities"]


def test_by_default_the_job_sees_the_nodes_run_read_only_to_find_the_runtime_with_no_capability():
    jb = job()
    assert set(volumes(jb)) == {"images", "node-run", "containerd-root", "tmp"}
    assert volume(jb, "node-run")["hostPath"] == {"path": "/run", "type": "Directory"}
    for at in ("/host/run", "/host/var/run"):
        assert mount(jb, at)["readOnly"] is True and mount(jb, at)["recursiveReadOnly"] == "IfPossible"
    env = env_of(jb)
    # The importer probes: containerd, or Docker where the kubelet reads Docker (cri-dockerd).
    assert env["CONTAINERD_CLIENT"] == "native" and env["IMAGE_RUNTIME"] == "auto"
    assert "CONTAINERD_ADDRESS" not in env and "DOCKER_HOST" not in env
    assert "HOST_ROOT" in env and not any(m["mountPath"] == "/host" for m in container(jb)["volumeMounts"])
    assert container(jb)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The importer picks its own --jobs: two archives in flight with the native client.
    assert not any(a.startswith("--jobs") for a in container(jb)["args"])


def test_an_selinux_context_can_be_set_for_enforcing_nodes():
    jb = job({"imagePull": {"seLinuxOptions": {"type": "spc_t"}}})
    pod_sc = jb["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["seLinuxOptions"] == {"type": "spc_t"}
    assert pod_sc["runAsUser"] == 0
    assert "seLinuxOptions" not in job()["spec"]["template"]["spec"]["securityContext"]


def test_the_job_runs_on_linux_nodes_by_default():
    assert job()["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


# ---- what the pod runs ---------------------------------------------------------------------------


def test_the_importer_image_can_be_pinned_by_digest():
    assert container(job({"imagePull": {"importerImage": {"digest": DIGEST}}}))["image"] == (
        f"ghcr.io/offline-images/offline-images:0.1.0@{DIGEST}"
    )
    with pytest.raises(helm_python.HelmValuesError) as err:
        job({"imagePull": {"importerImage": {"digest": "sha256:short"}}})
    assert "/imagePull/importerImage/digest" in str(err.value)


def test_the_bundled_binary_can_be_pinned_by_its_sha256():
    jb = job({"imagePull": {"bootstrap": {"enabled": True, "binarySha256": "cd" * 32}}})
    assert env_of(jb)["OFFLINE_IMAGES_BINARY_SHA256"] == "cd" * 32
    assert "OFFLINE_IMAGES_BINARY_SHA256" not in env_of(job({"imagePull": {"bootstrap": {"enabled": True}}}))


@pytest.mark.parametrize(
    ("registry", "repository", "expected"),
    [
        ("registry.site.local", "ghcr.io/offline-images/offline-images", "registry.site.local/offline-images/offline-images"),
        ("registry.site.local:5000/mirror/", "offline-images/offline-images", "registry.site.local:5000/mirror/offline-images/offline-images"),
        ("r.local", "localhost/tools/importer", "r.local/tools/importer"),
    ],
)
def test_global_image_registry_replaces_the_importer_images_registry(registry, repository, expected):
    values = merge(ENABLED, {"global": {"imageRegistry": registry}, "imagePull": {"importerImage": {"repository": repository}}})
    assert container(only(render(values), "Job"))["image"] == f"{expected}:0.1.0"


def test_image_pull_secrets_come_from_the_value_and_global():
    values = merge(ENABLED, {"global": {"imagePullSecrets": ["site-pull"]}, "imagePull": {"imagePullSecrets": [{"name": "mine"}, "other"]}})
    pod = only(render(values), "Job")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "site-pull"}, {"name": "mine"}, {"name": "other"}]
    assert "imagePullSecrets" not in job()["spec"]["template"]["spec"]


def test_required_images_are_passed_to_the_importer():
    c = container(job({"imagePull": {"requiredImages": ["registry.site.local/shop/web:4.5.6", "busybox"]}}))
    assert c["args"] == ["import", "--require=registry.site.local/shop/web:4.5.6", "--require=busybox"]
    with pytest.raises(helm_python.HelmValuesError):
        job({"imagePull": {"requiredImages": ["a, b"]}})


# ---- failures that fail fast and say why ----------------------------------------------------------


def test_exit_codes_1_and_2_fail_the_job_at_once_and_disruptions_do_not_count():
    policy = job({"imagePull": {"backoffLimit": 3}})["spec"]["podFailurePolicy"]
    assert policy["rules"][0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "importer", "operator": "In", "values": [1, 2]},
    }
    assert policy["rules"][1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


@pytest.mark.parametrize(("gib", "deadline"), [(0, 120), (4, 240), (20, 720), (200, 6120)])
def test_the_deadline_is_sized_to_the_bundle(gib, deadline):
    assert job({"imagePull": {"bundleGiB": gib}})["spec"]["activeDeadlineSeconds"] == deadline


def test_an_explicit_deadline_wins_over_the_bundle_size():
    assert job({"imagePull": {"bundleGiB": 100, "activeDeadlineSeconds": 900}})["spec"]["activeDeadlineSeconds"] == 900


def test_the_summary_is_the_termination_message_shown_by_kubectl_get_pod():
    c = container(job())
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_output_log_policy_is_a_value():
    annotations = job({"imagePull": {"hook": {"outputLogPolicy": "hook-failed,hook-succeeded"}}})["metadata"]["annotations"]
    assert annotations["helm.sh/hook-output-log-policy"] == "hook-failed,hook-succeeded"
    assert "helm.sh/hook-output-log-policy" not in job({"imagePull": {"hook": {"outputLogPolicy": ""}}})["metadata"]["annotations"]


def test_the_notes_say_how_to_read_each_failure():
    text = notes(ENABLED)
    for case in ("Exit 1", "MISSING", "Exit 2", "DeadlineExceeded", "ErrImageNeverPull", "FailedMount",
                 "violates PodSecurity", "timed out waiting for the condition", "state.terminated.message"):
        assert case in text, case


# ---- lifecycle -----------------------------------------------------------------------------------


def test_every_hook_object_is_deleted_on_success_and_kept_on_failure():
    docs = render(merge(ENABLED, {"imagePull": {"prune": {"enabled": True}}}))
    for doc in docs:
        policy = doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(",")
        assert "hook-succeeded" in policy, doc["metadata"]["name"]
        assert "hook-failed" not in policy
    sa = only(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade,post-delete"


def test_a_failed_job_is_removed_by_kubernetes_after_a_week_and_null_keeps_it():
    assert job()["spec"]["ttlSecondsAfterFinished"] == 604800
    assert "ttlSecondsAfterFinished" not in job({"imagePull": {"ttlSecondsAfterFinished": None}})["spec"]


def test_prune_waits_bounded_for_the_releases_containers_to_go():
    docs = render(merge(ENABLED, {"imagePull": {"prune": {"enabled": True, "waitSeconds": 300}}}))
    prune = next(d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "image-prune")
    assert container(prune)["args"] == ["prune", "--wait-for-containers=300"]
    # The wait fits in the prune Job's deadline: the import's plus the wait.
    assert prune["spec"]["activeDeadlineSeconds"] == 240 + 300
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ENABLED, {"imagePull": {"prune": {"enabled": True, "waitSeconds": 86400}}}))


def test_objects_carry_the_revision_so_old_jobs_logs_are_not_mixed_in():
    with helm_python.Chart.load(__import__("chartlib").CHART) as loaded:
        files = loaded.render(ENABLED, name="shop", namespace="apps", revision=7, is_upgrade=True)
    docs = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    jb = only(docs, "Job")
    assert jb["metadata"]["labels"]["offline-images.io/revision"] == "7"
    assert jb["spec"]["template"]["metadata"]["labels"]["offline-images.io/revision"] == "7"
    text = next(t for p, t in files.items() if p.endswith("NOTES.txt"))
    assert "offline-images.io/revision=7" in text


def test_the_notes_say_that_successful_jobs_are_gone_unless_they_are_kept():
    assert "Helm deleted the Jobs and their pods" in notes(ENABLED)
    assert "--set imagePull.hook.keepSucceededJobs=true" in notes(ENABLED)
    kept = merge(ENABLED, {"imagePull": {"hook": {"deletePolicy": "before-hook-creation"}}})
    assert "Helm deleted the Jobs" not in notes(kept)


# ---- the review path after a success -------------------------------------------------------------

POLICY = "helm.sh/hook-delete-policy"
OUTPUT = "helm.sh/hook-output-log-policy"


def test_helm_prints_the_log_of_a_single_job_on_failure_and_on_success_before_deleting_it():
    docs = render(merge(ENABLED, {"imagePull": {"prune": {"enabled": True}}}))
    for jb in (d for d in docs if d["kind"] == "Job"):
        assert jb["metadata"]["annotations"][OUTPUT] == "hook-failed,hook-succeeded", jb["metadata"]["name"]
        assert "hook-succeeded" in jb["metadata"]["annotations"][POLICY].split(",")
        kubernetes_validate.validate(jb, KUBE_VERSION, strict=True)
    text = notes(ENABLED)
    assert "Helm 3.18+ and 4 printed this log above, on success too, before deleting the Job" in text
    only_on_failure = notes(merge(ENABLED, {"imagePull": {"hook": {"outputLogPolicy": "hook-failed"}}}))
    assert "printed this log above" not in only_on_failure
    assert "Helm 3.18+ and 4 print this log when the Job failed" in only_on_failure


def test_kept_succeeded_jobs_stay_until_their_ttl_and_the_service_account_still_goes():
    docs = render(merge(ENABLED, {"imagePull": {"hook": {"keepSucceededJobs": True}, "prune": {"enabled": True}}}))
    by_component = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "Job"}
    importer = by_component["image-import"]
    assert importer["metadata"]["annotations"][POLICY] == "before-hook-creation"
    assert importer["spec"]["ttlSecondsAfterFinished"] == 604800
    # Helm still prints the log; the ServiceAccount and the prune Job keep their policies.
    assert importer["metadata"]["annotations"][OUTPUT] == "hook-failed,hook-succeeded"
    assert only(docs, "ServiceAccount")["metadata"]["annotations"][POLICY] == "before-hook-creation,hook-succeeded"
    assert by_component["image-prune"]["metadata"]["annotations"][POLICY] == "before-hook-creation,hook-succeeded"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    text = notes(merge(ENABLED, {"imagePull": {"hook": {"keepSucceededJobs": True}}}))
    assert "Helm deleted the Jobs" not in text
    assert "kept after a success too (hook.keepSucceededJobs),\n   for 604800 s (ttlSecondsAfterFinished)" in text


def test_kept_succeeded_jobs_of_every_node_stay_too():
    docs = render(merge(ENABLED, {"imagePull": {"nodes": ["worker-1", "worker-2"], "hook": {"keepSucceededJobs": True},
                                                "ttlSecondsAfterFinished": None}}))
    (lst,) = [d for d in docs if d["kind"] == "List"]
    # Helm reads the hook annotations of the List document.
    assert lst["metadata"]["annotations"][POLICY] == "before-hook-creation"
    assert len(lst["items"]) == 2
    for item in lst["items"]:
        assert item["metadata"]["annotations"][POLICY] == "before-hook-creation"
        kubernetes_validate.validate(item, KUBE_VERSION, strict=True)
    text = notes(merge(ENABLED, {"imagePull": {"nodes": ["worker-1"], "hook": {"keepSucceededJobs": True},
                                               "ttlSecondsAfterFinished": None}}))
    assert "kept after a success too (hook.keepSucceededJobs),\n   until the next install or upgrade" in text


def test_keeping_succeeded_jobs_never_leaves_the_delete_policy_empty():
    values = {"imagePull": {"hook": {"keepSucceededJobs": True, "deletePolicy": "hook-succeeded"}}}
    assert job(values)["metadata"]["annotations"][POLICY] == "before-hook-creation"
    assert job({"imagePull": {"hook": {"keepSucceededJobs": True, "deletePolicy": "hook-succeeded,hook-failed"}}}) \
        ["metadata"]["annotations"][POLICY] == "hook-failed"


def test_the_notes_of_every_node_say_that_helm_prints_no_log_and_give_the_review_path():
    text = notes(merge(ENABLED, {"imagePull": {"nodes": ["worker-1", "worker-2"]}}))
    assert "Helm prints none of these logs itself, not even on failure" in text
    assert "--prefix --tail=-1" in text
    assert "state.terminated.message" in text
    assert "printed this log above" not in text


EVERY_OPTION = [
    {"runtime": "docker", "dockerHost": "unix:///run/docker.sock", "seLinuxOptions": {"type": "spc_t"}},
    {"containerdClient": "native", "containerdAddress": "/run/k3s/containerd/containerd.sock",
     "importerImage": {"digest": DIGEST}, "imagePullSecrets": ["pull"], "requiredImages": ["busybox:1.36"]},
    {"bootstrap": {"enabled": True, "binarySha256": "cd" * 32}, "prune": {"enabled": True, "waitSeconds": 0},
     "recursiveReadOnly": "", "ttlSecondsAfterFinished": None, "bundleGiB": 50, "hook": {"outputLogPolicy": ""}},
    {"nodes": ["worker-1", "worker-2"], "prune": {"enabled": True}, "podLabels": {"app.kubernetes.io/name": "x"}},
]


@pytest.mark.parametrize("values", EVERY_OPTION, ids=["docker-socket", "native-socket", "bootstrap-pinned", "named-nodes"])
def test_every_option_renders_valid_objects_and_lints_clean(values):
    full = merge(ENABLED, {"imagePull": values})
    docs = render(full)
    assert any(d["kind"] in ("Job", "List") for d in docs)
    for doc in docs:
        for item in doc["items"] if doc["kind"] == "List" else [doc]:
            kubernetes_validate.validate(item, KUBE_VERSION, strict=True)
    report = helm_python.lint(__import__("chartlib").CHART, full, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
