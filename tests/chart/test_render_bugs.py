"""Regression tests of render bugs found in the field, each named after its bug."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from chartlib import CHART, ENABLED, KUBE_VERSION, merge, only, render, render_files
from test_all_nodes import chart_with_nodes, jobs_in, node, render_with


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node_: yaml.MappingNode, deep: bool = False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node_.value]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise AssertionError(f"duplicate keys {duplicated} at line {node_.start_mark.line + 1}")
    return loader.construct_mapping(node_, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@pytest.mark.parametrize("release", ["on", "123", "true", "null", "1e3"])
def test_a_release_named_like_a_yaml_boolean_or_number_renders_string_labels(release):
    docs = render(merge(ENABLED, {"imagePull": {"prune": {"enabled": True}}}), name=release)
    assert {d["kind"] for d in docs} == {"Job", "ServiceAccount"}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    for jb in (d for d in docs if d["kind"] == "Job"):
        assert jb["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == release


@pytest.mark.parametrize("length", [46, 47, 48, 53])
def test_from_47_character_release_names_a_nodes_import_and_prune_jobs_keep_distinct_names(tmp_path, length):
    release = ("r" * length)[:length]
    helm_python.validate_release_name(release)
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("worker-2")])
    docs, _ = render_with(chart, {"imagePull": {"prune": {"enabled": True}}}, name=release)
    names = [j["metadata"]["name"] for j in jobs_in(docs, "image-import") + jobs_in(docs, "image-prune")]
    assert len(names) == 4
    assert len(set(names)) == 4, names
    assert all(len(n) <= 63 for n in names)


@pytest.fixture
def parent_with_two_aliases(tmp_path: Path) -> Path:
    """An application chart that imports two bundles with two aliases of the chart."""
    root = tmp_path / "site"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v2
            name: site
            version: 1.0.0
            dependencies:
              - name: offline-images
                version: 0.1.0
                repository: file://../offline-images
                alias: base-images
              - name: offline-images
                version: 0.1.0
                repository: file://../offline-images
                alias: app-images
            """
        )
    )
    (root / "values.yaml").write_text("{}\n")
    shutil.copytree(CHART, root / "charts" / "offline-images")
    return root


def test_two_aliases_of_the_chart_in_one_parent_render_two_distinct_jobs(parent_with_two_aliases):
    values = {
        "base-images": {"imagePull": {"enabled": True, "imagesPath": "/srv/base"}},
        "app-images": {"imagePull": {"enabled": True, "imagesPath": "/srv/app"}},
    }
    docs = render(values, chart=parent_with_two_aliases, name="shop")
    names = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert len(names) == len(set(names)) == 4, names
    assert ("Job", "shop-app-images-image-import") in names
    assert ("Job", "shop-base-images-image-import") in names
    paths = sorted(
        v["hostPath"]["path"]
        for d in docs
        if d["kind"] == "Job"
        for v in d["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "images"
    )
    assert paths == ["/srv/app", "/srv/base"]
    # Each alias's pods are told apart by their name label.
    assert sorted(d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs if d["kind"] == "Job") == [
        "app-images",
        "base-images",
    ]


def test_the_chart_on_its_own_keeps_the_job_name_of_the_contract():
    assert only(render(ENABLED), "Job")["metadata"]["name"] == "shop-image-import"


def test_pod_labels_that_repeat_a_chart_label_are_not_rendered_twice():
    values = merge(
        ENABLED,
        {"imagePull": {"podLabels": {"app.kubernetes.io/component": "mine", "app.kubernetes.io/instance": "x", "team": "ops"}}},
    )
    for path, text in render_files(values).items():
        if not path.endswith("NOTES.txt"):
            list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    pod_labels = only(render(values), "Job")["spec"]["template"]["metadata"]["labels"]
    # The chart's own labels win: the review selector and prune rely on them.
    assert pod_labels["app.kubernetes.io/component"] == "image-import"
    assert pod_labels["app.kubernetes.io/instance"] == "shop"
    assert pod_labels["team"] == "ops"


def test_a_created_service_account_named_default_is_refused_so_helm_never_deletes_the_namespaces_default():
    with pytest.raises(helm_python.HelmError) as err:
        render(merge(ENABLED, {"imagePull": {"serviceAccount": {"create": True, "name": "default"}}}))
    assert "imagePull.serviceAccount.name" in str(err.value)
    assert "create: false" in str(err.value)
    # Using the existing default account is still possible.
    docs = render(merge(ENABLED, {"imagePull": {"serviceAccount": {"create": False, "name": "default"}}}))
    assert [d["kind"] for d in docs] == ["Job"]


def test_a_misspelt_top_level_key_is_refused_instead_of_rendering_nothing():
    with pytest.raises(helm_python.HelmValuesError) as err:
        render({"imagepull": {"enabled": True}})
    assert "additional properties 'imagepull' not allowed" in str(err.value)
    # Helm's own global values stay allowed.
    assert render({"global": {"imageRegistry": "r.local"}, **ENABLED})


def test_ttl_seconds_after_finished_0_is_refused_as_it_hangs_helm_4():
    with pytest.raises(helm_python.HelmValuesError) as err:
        render(merge(ENABLED, {"imagePull": {"ttlSecondsAfterFinished": 0}}))
    assert "at '/imagePull/ttlSecondsAfterFinished': minimum: got 0, want 1" in str(err.value)


# ---- issue 30: the chart's small contract bugs ----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "extra", "flag", "instead"),
    [
        ({"jobs": 2}, "--jobs=1", "--jobs", "set imagePull.jobs instead"),
        ({"strict": True}, "--strict", "--strict", "set imagePull.strict instead"),
        ({}, "--jobs", "--jobs", "set imagePull.jobs instead"),
        ({}, "--runtime=docker", "--runtime", "set imagePull.runtime instead"),
        ({}, "--containerd-address=/run/k3s/containerd/containerd.sock", "--containerd-address",
         "set imagePull.containerdAddress instead"),
        ({}, "--namespace=k8s.io", "--namespace", "set imagePull.containerdNamespace instead"),
        ({}, "--log-format=json", "--log-format", "set imagePull.logFormat instead"),
    ],
    ids=["jobs-repeated", "strict-repeated", "jobs-bare", "runtime", "containerd-address", "namespace", "log-format"],
)
def test_extra_args_that_repeat_a_chart_flag_are_refused_with_a_clear_message_not_an_exit_2(values, extra, flag, instead):
    # Rendered as `--jobs=2 --jobs=1`, clap refused the repeat and the Job exited 2.
    with pytest.raises(helm_python.HelmRenderError) as err:
        render(merge(ENABLED, {"imagePull": {**values, "extraArgs": ["--force", extra]}}))
    message = str(err.value)
    assert f'imagePull.extraArgs: "{extra}": the chart sets {flag} itself; {instead}' in message, message


def test_extra_args_the_chart_does_not_set_are_passed_after_its_own():
    docs = render(merge(ENABLED, {"imagePull": {"jobs": 2, "strict": True, "requiredImages": ["a/b:1"],
                                                "extraArgs": ["--force", "--require=c/d:2", "--jobsfile=x"]}}))
    args = only(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["import", "--jobs=2", "--strict", "--require=a/b:1", "--force", "--require=c/d:2", "--jobsfile=x"]


def test_the_termination_message_comment_no_longer_says_kubectl_get_pod_wide_shows_it():
    # `kubectl get pod -o wide` has no column for it; `describe pod` (Message) and the pod's
    # status (jsonpath) do show it.
    text = next(t for p, t in render_files(ENABLED).items() if p.endswith("import-job.yaml"))
    comment = text[text.index("# The importer writes its summary"):text.index("terminationMessagePath")]
    assert "-o wide" not in comment, comment
    assert "kubectl describe pod" in comment and "state.terminated.message" in comment, comment


def _host_paths(docs):
    for jb in jobs_in(docs, "image-import") + jobs_in(docs, "image-prune"):
        for v in jb["spec"]["template"]["spec"]["volumes"]:
            if "hostPath" in v:
                yield jb, v


@pytest.mark.parametrize("client", ["native", "ctr"])
@pytest.mark.parametrize("runtime", ["auto", "containerd", "docker"])
def test_no_host_path_lets_the_kubelet_or_runtime_create_anything_on_the_node(tmp_path, runtime, client):
    # type "" makes containerd's CRI plugin and Docker create a missing path as a directory
    # (a directory at /var/run/docker.sock breaks a later Docker); DirectoryOrCreate and
    # FileOrCreate create it too.
    chart = chart_with_nodes(tmp_path, [node("a", runtime="containerd://1.7.24"), node("b", runtime="docker://28.5.2"),
                                        node("c")])
    values = {"imagePull": {"runtime": runtime, "containerdClient": client, "prune": {"enabled": True}}}
    for docs in (render(merge(ENABLED, values)), render_with(chart, values)[0]):
        found = list(_host_paths(docs))
        assert found
        for jb, v in found:
            assert v["hostPath"].get("type") in ("Directory", "Socket"), (jb["metadata"]["name"], v)
