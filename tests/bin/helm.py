"""The subset of the helm CLI that `offline-images export --chart` uses, on the real Helm engine.

No helm binary can be installed where the tests run, so this front end gives the tests a `helm`
on PATH that renders with the same Go engine (PyPI helm-python-sdk, Helm v4):

    helm template NAME CHART [--version V] [-f|--values FILE]... [--set K=V]...
                  [--namespace NS] [--kube-version V] [--api-versions GROUP/VERSION]...
                  [--plain-http]
    helm version [--short]

CHART is a directory, a .tgz, or oci://HOST/PATH/NAME (pulled by the engine first, over plain
HTTP with --plain-http). It prints what `helm template` prints: every rendered template as a
YAML document headed by `# Source: PATH`, in file order, NOTES.txt and empty templates left
out. Values files are merged the way Helm merges them (deep, later wins), then `--set` values
on top; the engine coalesces them with the chart's defaults (where `null` deletes a default).
Like `helm template`, it refuses a chart whose declared dependencies are not under charts/.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import _native


def die(message: str, code: int = 1) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def check_dependencies(loaded: helm_python.Chart) -> None:
    """As `helm template` does before rendering: every declared dependency is under charts/."""
    present = {d.get("name") for d in loaded.dependencies}
    declared = [d.get("name") for d in loaded.metadata.get("dependencies") or []]
    missing = [name for name in declared if name not in present]
    if missing:
        die(
            "An error occurred while checking for chart dependencies. You may need to run "
            "`helm dependency build` to fetch missing dependencies: found in Chart.yaml, but "
            f"missing in charts/ directory: {', '.join(missing)}"
        )


def parse_template_args(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"values": [], "set": [], "api_versions": [], "positional": []}
    flags = {
        "-f": "values",
        "--values": "values",
        "--set": "set",
        "--api-versions": "api_versions",
        "-a": "api_versions",
        "--namespace": "namespace",
        "-n": "namespace",
        "--kube-version": "kube_version",
        "--version": "version",
    }
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in flags:
            if eq:
                value = inline
            else:
                i += 1
                if i >= len(argv):
                    die(f"flag needs an argument: {arg}")
                value = argv[i]
            key = flags[name]
            if isinstance(opts.get(key), list):
                opts[key].append(value)
            else:
                opts[key] = value
        elif arg == "--plain-http":
            opts["plain_http"] = True
        elif arg.startswith("-"):
            die(f"unknown flag: {arg}")
        else:
            opts["positional"].append(arg)
        i += 1
    if len(opts["positional"]) != 2:
        die(f"template needs NAME and CHART, got {opts['positional']}")
    return opts


def template(argv: list[str]) -> None:
    opts = parse_template_args(argv)
    name, chart = opts["positional"]
    if chart.startswith("oci://"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                helm_python.pull(
                    chart,
                    destination=tmp,
                    version=opts.get("version"),
                    plain_http=bool(opts.get("plain_http")),
                )
            except helm_python.HelmError as e:
                die(f"{chart}: {e}")
            pulled = sorted(Path(tmp).glob("*.tgz"))
            if len(pulled) != 1:
                die(f"{chart}: pulled {[p.name for p in pulled]}, expected one chart archive")
            render(name, str(pulled[0]), opts)
        return
    render(name, chart, opts)


def render(name: str, chart: str, opts: dict[str, Any]) -> None:
    values: dict[str, Any] = {}
    for path in opts["values"]:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            die(f"failed to parse {path}: {e}")
        values = merge(values, loaded)
    for expression in opts["set"]:
        values = merge(values, helm_python.parse_set_string(expression))
    render_opts: dict[str, Any] = {
        "name": name,
        "namespace": opts.get("namespace", "default"),
        "is_install": True,
    }
    if "kube_version" in opts:
        render_opts["kube_version"] = opts["kube_version"]
    if opts["api_versions"]:
        render_opts["api_versions"] = opts["api_versions"]
    try:
        with helm_python.Chart.load(chart) as loaded:
            check_dependencies(loaded)
            # The public render() takes no capabilities; the engine's own call does.
            rendered = json.loads(
                _native.call_string(
                    "helm_render", loaded._raw(), json.dumps(values), json.dumps(render_opts)
                )
            )
    except helm_python.HelmError as e:
        die(str(e))
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{text.rstrip()}\n")


def main() -> None:
    args = sys.argv[1:]
    if not args:
        die("usage: helm template NAME CHART [flags] | helm version", 2)
    if args[0] == "template":
        template(args[1:])
    elif args[0] == "version":
        print(f"{helm_python.helm_sdk_version()}+helm-python-sdk")
    else:
        die(f"unknown command {args[0]!r} (this front end knows template and version)", 2)


if __name__ == "__main__":
    main()
