"""The container and Kubernetes files in deploy/: the KubeRay RayJob manifest against the RayJob schema, the
Apptainer definition against the repository. Neither Kubernetes nor Apptainer runs here (no cluster, no network to
pull a base image): these are static checks.

tests/fixtures/kuberay_rayjob_v1.schema.json.gz is the `openAPIV3Schema` of version v1 of KubeRay's RayJob
CustomResourceDefinition (ray-operator/config/crd/bases/ray.io_rayjobs.yaml, github.com/ray-project/kuberay at
commit feeaf72fa, Apache-2.0), its descriptions and `status` removed."""

import gzip
import importlib.metadata
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.cli import build_parser

ROOT = Path(__file__).parents[1]
SCHEMA = json.loads(gzip.open(Path(__file__).parent / "fixtures" / "kuberay_rayjob_v1.schema.json.gz", "rt").read())


def unknown_fields(value, schema: dict, at: str = "") -> list[str]:
    """Keys the schema does not declare: what Kubernetes prunes without a word (and `kubectl apply
    --validate=strict` refuses), which a JSON Schema validator lets through."""
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
            extra = schema.get("additionalProperties")
            return [f for k, v in value.items() for f in unknown_fields(v, extra, f"{at}.{k}")] if extra else []
        props = schema.get("properties", {})
        if at == ".metadata":  # the root's ObjectMeta, which the API server checks itself
            return []
        return [f"{at}.{k}" for k in value if k not in props] + [
            f for k, v in value.items() if k in props for f in unknown_fields(v, props[k], f"{at}.{k}")
        ]
    if isinstance(value, list) and "items" in schema:
        return [f for i, v in enumerate(value) for f in unknown_fields(v, schema["items"], f"{at}[{i}]")]
    return []


def check_rayjob(manifest: dict) -> list[str]:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(manifest)]
    return errors + [f"{f}: unknown field" for f in unknown_fields(manifest, SCHEMA)]


def _validator():
    return jsonschema.Draft7Validator(SCHEMA)


def test_rayjob_manifest_is_a_valid_rayjob():
    manifest = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    assert check_rayjob(manifest) == []
    # its entrypoint is a harness command the CLI parses, joining the RayJob's cluster, on a shipped suite
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:2] == ["harness", "run"]
    args = build_parser().parse_args(argv[1:])
    assert args.address == "auto" and (ROOT / "suites" / Path(args.suite).name).exists()
    env = yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["HARNESS_DATA_DIR"].startswith("/mnt/shared")  # the data on the volume every pod mounts
    head = manifest["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver's node runs no trials


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda m: m["spec"].update(entrypont=m["spec"].pop("entrypoint")), ".spec.entrypont: unknown field"),
        (lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="two"), "'two' is not of type"),
        (lambda m: m["spec"]["rayClusterSpec"].pop("headGroupSpec"), "'headGroupSpec' is a required property"),
    ],
)
def test_the_check_refuses_a_broken_rayjob(change, error):
    manifest = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    change(manifest)
    assert any(error in e for e in check_rayjob(manifest)), check_rayjob(manifest)


def _sections(text: str) -> dict[str, list[str]]:
    sections, current = {"header": []}, "header"
    for line in text.splitlines():
        if m := re.match(r"^%(\w+)", line):
            current = m.group(1)
            sections[current] = []
        elif line.strip() and not line.lstrip().startswith("#"):
            sections[current].append(line.strip())
    return sections


def test_apptainer_definition_builds_from_the_repository():
    sections = _sections((ROOT / "deploy" / "harness.def").read_text())
    header = dict(line.split(":", 1) for line in sections["header"])
    assert header["Bootstrap"].strip() == "docker" and header["From"].strip().startswith("python:3.11")
    for line in sections["files"]:  # every file it copies is in the repository (built from its root)
        assert (ROOT / line.split()[0]).exists(), line
    copied = {line.split()[0] for line in sections["files"]}
    assert {"pyproject.toml", "harness", "analysis"} <= copied
    post = " ".join(sections["post"])
    extras = re.search(r"/opt/harness\[([\w,]+)\]", post).group(1).split(",")
    declared = importlib.metadata.metadata("harness").get_all("Provides-Extra")
    assert set(extras) <= set(declared) and {"ffcv", "deepspeed"} <= set(extras)
    for package in ("libopencv-dev", "libturbojpeg0-dev", "pkg-config"):  # what FFCV builds against (.ci/run too)
        assert package in post and package in (ROOT / ".ci" / "run").read_text()
    assert sections["runscript"] == ['exec harness "$@"']
