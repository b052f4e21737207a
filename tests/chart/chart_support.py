"""Helpers for the Helm chart tests: run helm, load CRDs, validate objects against CRD schemas, evaluate
CEL `x-kubernetes-validations` offline.

No cluster is involved. What the API server would do is imitated as far as the tests need it:

* `apply_defaults` fills in `default:` values the way the API server's defaulting does (objects that
  are present get their missing defaulted properties, recursively; absent objects stay absent unless
  they have a default themselves).
* `validate_against_crd` checks an object with `jsonschema` (installed with kubernetes-validate) after
  defaulting. It is stricter than the API server in one way on purpose: unknown fields are errors
  (the server would prune them silently), so a typo in an example cannot slip through.
* `cel_errors` evaluates every CEL rule at every schema node that has a value, with cel-python.
  Transition rules (those using `oldSelf`) run only when an old value exists at the same path, which
  is the API server's rule for updates. cel-python does not have the Kubernetes CEL library
  extensions (quantity, url, lowerAscii, ...), so the CRDs stick to standard CEL.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "conclavium"
CRD_DIR = CHART / "crds"
EXAMPLES = ROOT / "examples"
FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"
K8S_VERSION = "1.35"
MONITORING_API = "monitoring.coreos.com/v1"

Json = dict[str, Any]


def helm_binary() -> str | None:
    """helm from .tools/bin (scripts/install-tools.sh) or PATH, or None when it is not installed."""
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


def require_helm() -> str:
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm is not installed: run `bash scripts/install-tools.sh` (CI does)")
    return helm


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([require_helm(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template_args(
    values_files: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
    namespace: str = "ledger",
    release: str = "conclavium",
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        args += ["--values", f]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    return args


@functools.lru_cache(maxsize=32)
def _render_cached(
    values_files: tuple[str, ...],
    sets: tuple[str, ...],
    api_versions: tuple[str, ...],
    namespace: str,
    extra: tuple[str, ...],
) -> str:
    args = template_args(values_files, sets, api_versions, namespace)
    return run_helm(*args, *extra).stdout


def render(
    values_files: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
    namespace: str = "ledger",
    extra: tuple[str, ...] = (),
) -> list[Json]:
    """`helm template` → list of documents (empty documents dropped). Cached per argument set."""
    out = _render_cached(values_files, sets, api_versions, namespace, extra)
    return [copy.deepcopy(d) for d in yaml.safe_load_all(out) if d]


def render_full(**kw: Any) -> list[Json]:
    return render(values_files=(str(FULL_VALUES),), api_versions=(MONITORING_API,), **kw)


def by_kind(docs: list[Json], kind: str) -> list[Json]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[Json], kind: str, name_suffix: str) -> Json:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: list[Json]) -> Iterator[tuple[Json, Json]]:
    """(object, pod spec) for every workload and bare Pod."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["spec"]


# --- CRDs -----------------------------------------------------------------------------------------


def load_crds() -> dict[str, Json]:
    """kind → CRD document, from the chart's crds/ folder."""
    crds: dict[str, Json] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def crd_schema(crd: Json, version: str = "v1alpha1") -> Json:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(version)


def load_examples(directory: Path = EXAMPLES) -> list[Json]:
    docs: list[Json] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def apply_defaults(schema: Json, value: Any) -> Any:
    """Return a copy of value with the schema's defaults applied (API-server style)."""
    value = copy.deepcopy(value)
    _default_into(schema, value)
    return value


def _default_into(schema: Json, value: Any) -> None:
    if isinstance(value, dict):
        props: Json = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_into(sub, value[name])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k, v in value.items():
                if k not in props:
                    _default_into(addl, v)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_into(schema["items"], item)


def strict_json_schema(schema: Json) -> Json:
    """Translate a structural CRD schema into JSON Schema that rejects unknown fields.

    x-kubernetes-* keys are dropped (jsonschema ignores them anyway); `metadata` stays an open object;
    int-or-string nodes keep their anyOf.
    """
    out: Json = {}
    for k, v in schema.items():
        if k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {name: strict_json_schema(sub) for name, sub in v.items()}
        elif k == "items" and isinstance(v, dict):
            out[k] = strict_json_schema(v)
        elif k == "additionalProperties" and isinstance(v, dict):
            out[k] = strict_json_schema(v)
        elif k == "anyOf":
            out[k] = [strict_json_schema(s) for s in v]
        else:
            out[k] = v
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_errors(crd: Json, obj: Json) -> list[str]:
    """Schema violations of obj (after defaulting), as 'path: message' strings."""
    import jsonschema

    schema = crd_schema(crd)
    checker = jsonschema.Draft7Validator(
        strict_json_schema(schema), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    defaulted = apply_defaults(schema, obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in checker.iter_errors(defaulted)]


# --- CEL ------------------------------------------------------------------------------------------


def iter_rules(schema: Json, path: str = "") -> Iterator[tuple[str, Json]]:
    """(schema path, rule) for every x-kubernetes-validations rule in the schema tree."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from iter_rules(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from iter_rules(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_rules(schema["additionalProperties"], f"{path}{{*}}")


@functools.lru_cache(maxsize=256)
def _cel_program(expr: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(expr))


def compile_cel(expr: str) -> None:
    _cel_program(expr)


def _eval_rule(expr: str, new: Any, old: Any, has_old: bool) -> bool | str:
    import celpy

    activation: dict[str, Any] = {"self": celpy.json_to_cel(new)}
    if has_old:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _cel_program(expr).evaluate(activation)
    except celpy.CELEvalError as exc:  # e.g. a field accessed without has(): the server fails the rule too
        return f"evaluation error: {exc.args[0] if exc.args else exc}"
    if isinstance(result, Exception):
        return f"evaluation error: {result}"
    return bool(result)


_MISSING = object()


def cel_errors(crd: Json, obj: Json, old: Json | None = None) -> list[str]:
    """Messages of the CEL rules that obj violates (old given: an update from old to obj).

    Both objects are defaulted first, as the API server does before validation.
    """
    schema = crd_schema(crd)
    new_d = apply_defaults(schema, obj)
    old_d = apply_defaults(schema, old) if old is not None else _MISSING
    errors: list[str] = []
    _cel_walk(schema, new_d, old_d, "", errors)
    return errors


def _cel_walk(schema: Json, new: Any, old: Any, path: str, errors: list[str]) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule["rule"]
        transition = "oldSelf" in expr
        if transition and old is _MISSING:
            continue  # transition rules are skipped on create and for newly added values
        outcome = _eval_rule(expr, new, None if old is _MISSING else old, old is not _MISSING)
        if outcome is not True:
            message = rule.get("message", f"failed rule: {expr}")
            detail = "" if outcome is False else f" ({outcome})"
            errors.append(f"{path or '<root>'}: {message}{detail}")
    if isinstance(new, dict):
        props: Json = schema.get("properties", {})
        for name, sub in props.items():
            if name in new:
                sub_old = old.get(name, _MISSING) if isinstance(old, dict) else _MISSING
                _cel_walk(sub, new[name], sub_old, f"{path}.{name}", errors)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k, v in new.items():
                if k not in props:
                    sub_old = old.get(k, _MISSING) if isinstance(old, dict) else _MISSING
                    _cel_walk(addl, v, sub_old, f"{path}.{k}", errors)
    elif isinstance(new, list) and isinstance(schema.get("items"), dict):
        # Old items are correlated only for list-type map (by key); atomic/set lists get no oldSelf.
        keys = schema.get("x-kubernetes-list-map-keys")
        old_by_key: dict[tuple[Any, ...], Any] = {}
        if keys and isinstance(old, list):
            old_by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(new):
            sub_old: Any = _MISSING
            if keys and isinstance(item, dict):
                sub_old = old_by_key.get(tuple(item.get(k) for k in keys), _MISSING)
            _cel_walk(schema["items"], item, sub_old, f"{path}[{i}]", errors)
