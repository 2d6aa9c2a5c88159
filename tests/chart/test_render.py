"""What the chart renders: the import Job, its ServiceAccount, and nothing when disabled."""

from __future__ import annotations

import re
import tomllib

import helm_python
import kubernetes_validate
import pytest
import yaml

from chartlib import (
    CHART,
    ROOT,
    ENABLED,
    KUBE_VERSION,
    container,
    default_values,
    env_of,
    job,
    merge,
    mount,
    notes,
    only,
    render,
    volume,
)

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"
DELETE_POLICY = "helm.sh/hook-delete-policy"


def test_nothing_is_rendered_by_default():
    assert render() == []


def test_nothing_is_rendered_when_image_pull_is_disabled():
    assert render({"imagePull": {"enabled": False, "strict": True}}) == []


def test_enabling_image_pull_renders_the_import_job_and_its_service_account():
    docs = render(ENABLED)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Job", "shop-image-import"),
        ("ServiceAccount", "shop-image-import"),
    ]
    for doc in docs:
        assert doc["metadata"]["namespace"] == "apps"


def test_the_job_is_named_after_the_release():
    assert job(name="billing")["metadata"]["name"] == "billing-image-import"


def test_a_long_release_name_is_cut_to_63_characters():
    name = "a" * 40 + "-" + "b" * 12  # 53 characters, the longest release name Helm accepts
    helm_python.validate_release_name(name)
    job_name = job(name=name)["metadata"]["name"]
    assert len(job_name) == 63
    assert f"{name}-image-import".startswith(job_name)
    assert not job_name.endswith("-")
    sa = only(render(ENABLED, name=name), "ServiceAccount")
    assert sa["metadata"]["name"] == job_name


def test_the_job_is_a_pre_install_and_pre_upgrade_hook_deleted_on_success_and_kept_on_failure():
    annotations = job()["metadata"]["annotations"]
    assert annotations[HOOK] == "pre-install,pre-upgrade"
    assert annotations[DELETE_POLICY] == "before-hook-creation,hook-succeeded"
    assert annotations[WEIGHT] == "-10"
    # Helm 3.18+ and 4 print the log of the hook Job when it failed and, before deleting it, when it succeeded.
    assert annotations["helm.sh/hook-output-log-policy"] == "hook-failed,hook-succeeded"


def test_the_service_account_is_a_hook_with_a_lower_weight_than_the_job():
    docs = render(merge(ENABLED, {"imagePull": {"hook": {"weight": 5}}}))
    sa, jb = only(docs, "ServiceAccount"), only(docs, "Job")
    assert sa["metadata"]["annotations"][HOOK] == "pre-install,pre-upgrade"
    assert jb["metadata"]["annotations"][WEIGHT] == "5"
    assert sa["metadata"]["annotations"][WEIGHT] == "4"
    assert int(sa["metadata"]["annotations"][WEIGHT]) < int(jb["metadata"]["annotations"][WEIGHT])


def test_the_hook_delete_policy_comes_from_values_for_every_importer_object():
    policy = "before-hook-creation,hook-succeeded"
    docs = render(merge(ENABLED, {"imagePull": {"hook": {"deletePolicy": policy}}}))
    assert [d["metadata"]["annotations"][DELETE_POLICY] for d in docs] == [policy, policy]


def test_the_images_are_mounted_read_only_at_images_from_the_node_path():
    jb = job({"imagePull": {"imagesPath": "/srv/bundle"}})
    assert mount(jb, "/images")["readOnly"] is True
    assert volume(jb, mount(jb, "/images")["name"])["hostPath"] == {"path": "/srv/bundle", "type": "Directory"}
    assert env_of(jb)["IMAGES_PATH"] == "/images"


def test_the_default_images_path_is_under_var_lib():
    jb = job()
    assert volume(jb, "images")["hostPath"]["path"] == "/var/lib/offline-images/images"


def test_with_the_ctr_client_the_node_root_is_mounted_read_only_at_host_and_passed_as_host_root():
    jb = job({"imagePull": {"containerdClient": "ctr"}})
    host = mount(jb, "/host")
    assert host["readOnly"] is True
    assert volume(jb, host["name"])["hostPath"] == {"path": "/", "type": "Directory"}
    assert env_of(jb)["HOST_ROOT"] == "/host"


def test_every_mount_but_the_scratch_directory_is_read_only():
    jb = job()
    writable = [m["mountPath"] for m in container(jb)["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp"]
    assert "emptyDir" in volume(jb, mount(jb, "/tmp")["name"])


def test_the_images_can_come_from_an_nfs_export():
    jb = job({"imagePull": {"imagesVolume": {"type": "nfs", "nfs": {"server": "10.0.0.5", "path": "/exports/images"}}}})
    assert volume(jb, "images") == {
        "name": "images",
        "nfs": {"server": "10.0.0.5", "path": "/exports/images", "readOnly": True},
    }
    assert mount(jb, "/images")["readOnly"] is True


def test_the_images_can_come_from_an_existing_claim_and_a_sub_path():
    jb = job(
        {
            "imagePull": {
                "imagesVolume": {
                    "type": "persistentVolumeClaim",
                    "persistentVolumeClaim": {"claimName": "bundles"},
                    "subPath": "release-7",
                }
            }
        }
    )
    assert volume(jb, "images")["persistentVolumeClaim"] == {"claimName": "bundles", "readOnly": True}
    assert mount(jb, "/images")["subPath"] == "release-7"
    assert mount(jb, "/images")["readOnly"] is True


@pytest.mark.parametrize(("client", "capabilities"), [
    ("native", {"drop": ["ALL"]}),
    ("ctr", {"drop": ["ALL"], "add": ["SYS_CHROOT"]}),
])
def test_the_container_runs_as_root_with_no_capability_but_sys_chroot_for_ctr_and_a_read_only_root_filesystem(client, capabilities):
    jb = job({"imagePull": {"containerdClient": client}})
    pod_sc = jb["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsUser"] == 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(jb)["securityContext"]
    assert sc["capabilities"] == capabilities
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False


def test_the_values_explain_why_the_importer_runs_as_root():
    text = (CHART / "values.yaml").read_text()
    comment = text[: text.index("podSecurityContext:")].rsplit("\n\n", 1)[-1]
    assert "root" in comment and "socket" in comment


def test_no_service_account_token_is_mounted():
    docs = render(ENABLED)
    assert only(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    pod = only(docs, "Job")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shop-image-import"


def test_an_existing_service_account_can_be_used_instead():
    docs = render(merge(ENABLED, {"imagePull": {"serviceAccount": {"create": False, "name": "importer"}}}))
    assert [d["kind"] for d in docs] == ["Job"]
    assert docs[0]["spec"]["template"]["spec"]["serviceAccountName"] == "importer"


def test_without_a_created_or_named_service_account_the_default_one_is_used():
    jb = job({"imagePull": {"serviceAccount": {"create": False}}})
    assert jb["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_the_importer_image_tag_defaults_to_the_app_version_and_is_never_latest():
    c = container(job())
    assert c["image"] == "ghcr.io/offline-images/offline-images:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert default_values()["imagePull"]["importerImage"]["tag"] != "latest"


def test_the_chart_app_version_is_the_importer_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert chart["appVersion"] == cargo["package"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "offline-images"


def test_the_job_runs_the_import_command_of_the_binary():
    c = container(job())
    assert c["command"] == ["/offline-images"]
    assert c["args"] == ["import"]


def test_a_failed_import_shows_the_end_of_its_log_in_the_pod_status():
    assert container(job())["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_default_job_does_not_retry_and_has_a_deadline_within_helms_default_timeout():
    spec = job()["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 240 < 300
    assert spec["ttlSecondsAfterFinished"] == 604800
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("ttl", [1, 600])
def test_ttl_seconds_after_finished_is_rendered_only_when_set(ttl):
    assert job({"imagePull": {"ttlSecondsAfterFinished": ttl}})["spec"]["ttlSecondsAfterFinished"] == ttl


def test_the_default_resources_request_little_and_cap_memory():
    resources = container(job())["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert resources["limits"]["memory"] == "512Mi"


def test_every_value_reaches_the_job():
    values = {
        "imagePull": {
            "importerImage": {"repository": "registry.site.local/tools/importer", "tag": "0.1.0-site", "pullPolicy": "Never"},
            "imagesPath": "/data/bundle",
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/hostname": "node-3"},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "bundle", "operator": "In", "values": ["yes"]}]}]
                    }
                }
            },
            "runtime": "containerd",
            "containerdClient": "ctr",
            "containerdAddress": "/run/k3s/containerd/containerd.sock",
            "containerdNamespace": "site.images",
            "dockerHost": "unix:///run/docker.sock",
            "strict": True,
            "jobs": 4,
            "logFormat": "json",
            "activeDeadlineSeconds": 7200,
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 86400,
            "hook": {"weight": -50, "deletePolicy": "hook-succeeded"},
            "serviceAccount": {"create": True, "name": "image-importer"},
            "podSecurityContext": {"runAsUser": 0, "fsGroup": 0},
            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": ["SYS_CHROOT", "DAC_READ_SEARCH"]}},
            "priorityClassName": "system-node-critical",
            "extraArgs": ["--force", "--report=/tmp/report.json"],
            "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
            "podAnnotations": {"site/owner": "ops"},
            "podLabels": {"site/tier": "bootstrap"},
        }
    }
    jb = job(values, name="site")
    ip = values["imagePull"]
    pod = jb["spec"]["template"]["spec"]
    c = container(jb)

    assert c["image"] == "registry.site.local/tools/importer:0.1.0-site"
    assert c["imagePullPolicy"] == "Never"
    assert volume(jb, "images")["hostPath"]["path"] == "/data/bundle"
    assert c["resources"] == ip["resources"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", **ip["nodeSelector"]}
    assert pod["tolerations"] == ip["tolerations"]
    assert pod["affinity"] == ip["affinity"]
    env = env_of(jb)
    assert env["IMAGE_RUNTIME"] == "containerd"
    assert env["CONTAINERD_ADDRESS"] == "/run/k3s/containerd/containerd.sock"
    assert env["CONTAINERD_NAMESPACE"] == "site.images"
    assert env["DOCKER_HOST"] == "unix:///run/docker.sock"
    assert env["LOG_FORMAT"] == "json"
    assert env["RUST_BACKTRACE"] == "1"
    assert c["args"] == ["import", "--jobs=4", "--strict", "--force", "--report=/tmp/report.json"]
    assert jb["spec"]["activeDeadlineSeconds"] == 7200
    assert jb["spec"]["backoffLimit"] == 2
    assert jb["spec"]["ttlSecondsAfterFinished"] == 86400
    assert jb["metadata"]["annotations"][WEIGHT] == "-50"
    assert jb["metadata"]["annotations"][DELETE_POLICY] == "hook-succeeded"
    assert pod["serviceAccountName"] == "image-importer"
    # Helm merges maps with the defaults and replaces lists.
    assert pod["securityContext"]["fsGroup"] == 0
    assert c["securityContext"]["capabilities"]["add"] == ["SYS_CHROOT", "DAC_READ_SEARCH"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert jb["spec"]["template"]["metadata"]["annotations"] == {"site/owner": "ops"}
    labels = jb["spec"]["template"]["metadata"]["labels"]
    assert labels["site/tier"] == "bootstrap"
    assert labels["app.kubernetes.io/instance"] == "site"


def test_with_the_ctr_client_unset_runtime_addresses_are_left_to_the_importer_to_probe():
    env = env_of(job({"imagePull": {"containerdClient": "ctr"}}))
    assert env["IMAGE_RUNTIME"] == "auto"
    assert env["CONTAINERD_NAMESPACE"] == "k8s.io"
    assert "CONTAINERD_ADDRESS" not in env
    assert "DOCKER_HOST" not in env
    assert "--strict" not in container(job())["args"]


def test_an_extra_argument_with_yaml_syntax_stays_one_string():
    c = container(job({"imagePull": {"extraArgs": ["--report=/tmp/a: b.json", "true"]}}))
    assert c["args"][-2:] == ["--report=/tmp/a: b.json", "true"]


def test_the_chart_lints_clean_in_strict_mode():
    for values in (None, ENABLED):
        report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize(
    "values",
    [
        ENABLED,
        {"imagePull": {"enabled": True, "imagesVolume": {"type": "nfs", "nfs": {"server": "nfs.local", "path": "/images"}}}},
        {"imagePull": {"enabled": True, "ttlSecondsAfterFinished": 1, "serviceAccount": {"create": False}, "strict": True}},
    ],
    ids=["defaults", "nfs", "ttl-and-no-service-account"],
)
def test_rendered_manifests_are_valid_kubernetes_objects(values):
    docs = render(values)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_no_helm_create_leftovers_are_in_the_chart():
    names = {p.name for p in (CHART / "templates").iterdir()}
    assert names == {"_helpers.tpl", "_job.tpl", "NOTES.txt", "import-job.yaml", "import-serviceaccount.yaml", "prune-job.yaml",
                     "mirror-daemonset.yaml", "_mirror.tpl", "mirror-restore.yaml", "stock-daemonset.yaml", "_verify.tpl",
                     "verify-key-configmap.yaml"}
    text = "\n".join(p.read_text() for p in CHART.rglob("*") if p.is_file())
    for leftover in ("replicaCount", "ingress:", "autoscaling", "mychart", "This is a YAML-formatted file"):
        assert leftover not in text


def test_the_notes_tell_how_to_review_the_import_and_check_the_node():
    text = notes(ENABLED, name="shop", namespace="apps")
    selector = ("app.kubernetes.io/name=offline-images,app.kubernetes.io/instance=shop,"
                "app.kubernetes.io/component=image-import,offline-images.io/revision=1")
    assert f"kubectl logs -n apps -l {selector} --tail=-1" in text
    assert "crictl images" in text
    assert "ctr -n k8s.io images ls" in text
    assert "How to read a failed install" in text


def test_the_notes_say_how_to_enable_the_import_when_it_is_disabled():
    assert "imagePull.enabled=true" in notes()


def _documented_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        keys.append(path)
        # resources is Kubernetes' own structure, documented by Kubernetes.
        if sub.get("additionalProperties") is False and key != "resources":
            keys.extend(_documented_keys(sub, path))
    return keys


def test_every_values_key_is_in_the_schema_and_has_a_comment_in_place():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    schema_keys = set(_documented_keys(schema["properties"]["imagePull"], "imagePull"))
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    seen = set()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        if path == "imagePull" or path in schema_keys:
            seen.add(path)
            assert lines[i - 1].strip().startswith("#"), f"values.yaml: `{path}` has no comment above it"
    assert seen - {"imagePull"} == schema_keys
