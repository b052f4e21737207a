"""The CRDs: structure, printer columns, status conventions, the example resources against the schemas,
and the CEL validation rules evaluated offline (immutability and cross-field rules). No helm needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from chart_support import (
    EXAMPLES,
    Json,
    apply_defaults,
    cel_errors,
    compile_cel,
    crd_schema,
    iter_rules,
    load_crds,
    load_examples,
    schema_errors,
)

CRDS = load_crds()
OURS = ("Consortium", "ConsortiumMember", "ConsortiumNode")


def _by_kind(kind: str) -> list[Json]:
    return [d for d in load_examples() if d["kind"] == kind]


def consortium() -> Json:
    return copy.deepcopy(_by_kind("Consortium")[0])


def member(index: int = 0) -> Json:
    return copy.deepcopy(_by_kind("ConsortiumMember")[index])


def node(**spec: Any) -> Json:
    base: Json = {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumNode",
        "metadata": {"name": "acme-bank-executor-0"},
        "spec": {
            "consortiumRef": {"name": "trade-finance"},
            "memberRef": {"name": "acme-bank"},
            "memberId": "acme-bank",
            "role": "Executor",
            "ordinal": 0,
            "image": "ghcr.io/conclavium/conclavium:0.1.0",
            "tee": {"platform": "sev-snp", "runtimeClassName": "kata-qemu-snp"},
        },
    }
    base["spec"].update(spec)
    return base


def errors(obj: Json, old: Json | None = None) -> list[str]:
    crd = CRDS[obj["kind"]]
    return schema_errors(crd, obj) + cel_errors(crd, obj, old)


# --- structure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OURS)
def test_crd_names_scope_and_category(kind: str) -> None:
    crd = CRDS[kind]
    spec = crd["spec"]
    assert spec["group"] == "conclavium.io"
    assert spec["scope"] == "Namespaced"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.conclavium.io"
    assert "conclavium" in spec["names"]["categories"]
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_short_names_are_unique() -> None:
    names = [n for k in OURS for n in CRDS[k]["spec"]["names"]["shortNames"]]
    assert len(names) == len(set(names))


def _schema_at(schema: Json, json_path: str) -> Json | None:
    node: Json | None = schema
    for part in json_path.lstrip(".").split("."):
        if node is None:
            return None
        node = node.get("properties", {}).get(part)
    return node


@pytest.mark.parametrize("kind", OURS)
def test_printer_columns_point_at_schema_fields(kind: str) -> None:
    (version,) = CRDS[kind]["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    columns = version["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert "Phase" in names and names[-1] == "Age"
    for col in columns:
        if col["jsonPath"] == ".metadata.creationTimestamp":
            continue
        field = _schema_at(schema, col["jsonPath"])
        assert field is not None, f"{kind} column {col['name']}: {col['jsonPath']} not in the schema"
        expected = {"integer": "integer", "string": "string", "boolean": "boolean"}[field["type"]]
        assert col["type"] == expected, col


@pytest.mark.parametrize("kind", OURS)
def test_status_conventions(kind: str) -> None:
    status = crd_schema(CRDS[kind])["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    assert status["phase"]["type"] == "string" and status["phase"]["enum"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert {"type", "status"} <= set(item["required"])  # list-map keys must be required
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def _walk(schema: Json, path: str = "") -> list[tuple[str, Json]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += _walk(schema[key], f"{path}[{key}]")
    return out


@pytest.mark.parametrize("kind", OURS)
def test_schemas_are_structural_and_cel_cost_bounded(kind: str) -> None:
    """Every node has a type; lists and maps carry maxItems/maxProperties and strings maxLength or
    a pattern/enum where CEL iterates, so the API server's CEL cost estimate stays bounded."""
    schema = crd_schema(CRDS[kind])
    for path, node in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{kind}{path} has no type"
        assert not ("properties" in node and isinstance(node.get("additionalProperties"), dict)), path
        if node["type"] == "array":
            assert "maxItems" in node, f"{kind}{path}: unbounded list"
            assert node.get("x-kubernetes-list-type") in ("atomic", "set", "map"), f"{kind}{path}"
        if node["type"] == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node or path.endswith(("requests", "limits")), f"{kind}{path}: unbounded map"


@pytest.mark.parametrize("kind", OURS)
def test_every_cel_rule_compiles(kind: str) -> None:
    rules = list(iter_rules(crd_schema(CRDS[kind])))
    assert rules
    for path, rule in rules:
        compile_cel(rule["rule"])
        assert rule.get("message"), f"{kind}{path}: rule without a message"


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("Consortium", ".spec.ledgerId"),
        ("ConsortiumMember", ".spec.memberId"),
        ("ConsortiumMember", ".spec.consortiumRef"),
        ("ConsortiumNode", ".spec.consortiumRef"),
        ("ConsortiumNode", ".spec.memberRef"),
        ("ConsortiumNode", ".spec.role"),
        ("ConsortiumNode", ".spec.ordinal"),
    ],
)
def test_identity_fields_have_immutability_rules(kind: str, field: str) -> None:
    rules = {path: r["rule"] for path, r in iter_rules(crd_schema(CRDS[kind]))}
    assert rules.get(field) == "self == oldSelf"
    spec = crd_schema(CRDS[kind])["properties"]["spec"]
    assert field.split(".")[-1] in spec["required"], "immutable identity must be required (else it can be added later)"


# --- examples -------------------------------------------------------------------------------------


def test_examples_are_one_consortium_and_three_members() -> None:
    kinds = [d["kind"] for d in load_examples()]
    assert kinds.count("Consortium") == 1
    assert kinds.count("ConsortiumMember") == 3
    refs = {m["spec"]["consortiumRef"]["name"] for m in _by_kind("ConsortiumMember")}
    assert refs == {consortium()["metadata"]["name"]}
    cm_name = consortium()["spec"]["attestation"]["measurementsConfigMapRef"]["name"]
    assert any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name for d in load_examples())


@pytest.mark.parametrize(
    "index", range(len(load_examples())), ids=[f"{d['kind']}-{d['metadata']['name']}" for d in load_examples()]
)
def test_example_is_valid(index: int) -> None:
    doc = load_examples()[index]
    if doc["kind"] not in CRDS:
        import kubernetes_validate

        kubernetes_validate.validate(doc, "1.35", strict=True)
        return
    assert doc["apiVersion"] == "conclavium.io/v1alpha1"
    assert errors(doc) == []


DEVELOPMENT = load_examples(EXAMPLES / "development")


@pytest.mark.parametrize("doc", DEVELOPMENT, ids=[f"{d['kind']}-{d['metadata']['name']}" for d in DEVELOPMENT])
def test_development_example_is_valid(doc: dict[str, Any]) -> None:
    """examples/development/ (the walk-through tests/e2e follows) validates against the CRDs."""
    assert doc["apiVersion"] == "conclavium.io/v1alpha1"
    assert errors(doc) == []


def test_defaults_are_applied() -> None:
    crd = CRDS["ConsortiumMember"]
    minimal = {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumMember",
        "metadata": {"name": "m"},
        "spec": {
            "consortiumRef": {"name": "c"},
            "memberId": "m",
            "identity": {"keyAlgorithm": "Ed25519", "secretRef": {"name": "m-id"}},
        },
    }
    assert errors(minimal) == []
    spec = apply_defaults(crd_schema(crd), minimal)["spec"]
    assert spec["role"] == "Voting" and spec["executors"] == 1 and spec["sequencerStandbys"] == 0
    assert spec["storage"] == {"size": "10Gi", "deleteClaim": False}
    assert spec["identity"]["secretRef"]["certificateKey"] == "tls.crt"
    assert spec["identity"]["inClusterSigning"] is False


# --- schema negatives -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: c["spec"].update(ledgerId="Trade_Finance"), "ledgerId"),
        (lambda c: c["spec"]["tee"].update(platforms=["sev-snp", "nitro"]), "nitro"),
        (lambda c: c["spec"]["tee"].update(platforms=[]), "platforms"),
        (lambda c: c["spec"].update(nats={"url": "nats://nats:4222"}), "nats"),  # the chart's, not the CR's
        (lambda c: c["spec"].update(foundingMembers=["Acme_Bank"]), "foundingMembers"),
        (lambda c: c["spec"].update(foundingMembers=[]), "foundingMembers"),
        (lambda c: c["spec"]["sequencer"].update(blockInterval="fast"), "blockInterval"),
        (lambda c: c["spec"]["attestation"].update(minimumTcb={"sevSnp": {"snp": 8}}), "minimumTcb"),  # removed
        (lambda c: c["spec"]["attestation"].update(reverifyInterval="12 hours"), "reverifyInterval"),
        (lambda c: c["spec"].setdefault("image", {}).update(pullPolicy="Sometimes"), "pullPolicy"),
        (lambda c: c["spec"].update(ledgerID="typo"), "ledgerID"),
        (lambda c: c["spec"].pop("tee"), "tee"),
    ],
)
def test_consortium_schema_rejects(mutate: Any, fragment: str) -> None:
    c = consortium()
    mutate(c)
    errs = schema_errors(CRDS["Consortium"], c)
    assert errs and any(fragment in e for e in errs), errs


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: m["spec"].update(role="Observer"), "role"),
        (lambda m: m["spec"].update(weight=0), "weight"),
        (lambda m: m["spec"].update(executors=17), "executors"),
        (lambda m: m["spec"].update(sequencerStandbys=-1), "sequencerStandbys"),
        (lambda m: m["spec"]["identity"].update(keyAlgorithm="RSA"), "keyAlgorithm"),
        (lambda m: m["spec"]["storage"].update(size="lots"), "size"),
        (lambda m: m["spec"]["resources"]["requests"].update(cpu="one"), "cpu"),
        (lambda m: m["spec"].pop("memberId"), "memberId"),
    ],
)
def test_member_schema_rejects(mutate: Any, fragment: str) -> None:
    m = member()
    mutate(m)
    errs = schema_errors(CRDS["ConsortiumMember"], m)
    assert errs and any(fragment in e for e in errs), errs


def test_status_schema_rejects_bad_conditions() -> None:
    m = member()
    good = {
        "type": "Admitted",
        "status": "True",
        "reason": "ProposalAccepted",
        "message": "voted 2/3",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    m["status"] = {"observedGeneration": 1, "phase": "Admitted", "conditions": [good], "nodesReady": "2/3"}
    assert schema_errors(CRDS["ConsortiumMember"], m) == []
    m["status"]["conditions"] = [{**good, "status": "Yes"}]
    assert schema_errors(CRDS["ConsortiumMember"], m)
    m["status"]["conditions"] = [{**good, "reason": "not a reason"}]
    assert schema_errors(CRDS["ConsortiumMember"], m)
    m["status"]["conditions"] = [{k: v for k, v in good.items() if k != "lastTransitionTime"}]
    assert schema_errors(CRDS["ConsortiumMember"], m)
    m["status"] = {"phase": "Happy"}
    assert schema_errors(CRDS["ConsortiumMember"], m)


# --- CEL: immutability ------------------------------------------------------------------------------


def test_consortium_ledger_id_is_immutable() -> None:
    old = consortium()
    new = consortium()
    new["spec"]["ledgerId"] = "trade-finance-2026"
    assert cel_errors(CRDS["Consortium"], new, old) == [".spec.ledgerId: ledgerId is immutable"]
    same = consortium()
    same["spec"]["sequencer"]["maxBlockTransactions"] = 500  # other fields may change
    assert cel_errors(CRDS["Consortium"], same, old) == []
    # On create there is no oldSelf: the transition rule does not apply.
    assert cel_errors(CRDS["Consortium"], new) == []


def test_consortium_cannot_leave_production() -> None:
    old = consortium()
    new = consortium()
    new["spec"]["environment"] = "staging"
    assert cel_errors(CRDS["Consortium"], new, old) == [
        ".spec.environment: a production consortium cannot be moved to another environment"
    ]
    staging = consortium()
    staging["spec"]["environment"] = "staging"
    assert cel_errors(CRDS["Consortium"], consortium(), staging) == []  # promotion is fine


def _make_participant(m: Json) -> None:
    m["spec"].update(role="Participant", sequencerStandbys=0)
    del m["spec"]["weight"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["spec"].update(memberId="acme"), ".spec.memberId: memberId is immutable"),
        (lambda m: m["spec"]["consortiumRef"].update(name="other"), ".spec.consortiumRef: consortiumRef is immutable"),
        (_make_participant, ".spec.role: role is immutable; remove the member and add it again with the new role"),
    ],
)
def test_member_identity_is_immutable(mutate: Any, message: str) -> None:
    old = member()
    new = member()
    mutate(new)
    assert message in cel_errors(CRDS["ConsortiumMember"], new, old)
    assert cel_errors(CRDS["ConsortiumMember"], old, old) == []


def test_member_mutable_fields_may_change() -> None:
    old = member()
    new = member()
    new["spec"].update(executors=3, weight=5, displayName="ACME")
    new["spec"]["storage"]["size"] = "100Gi"
    assert errors(new, old) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consortiumRef", {"name": "other"}),
        ("memberRef", {"name": "b"}),
        ("role", "Sequencer"),
        ("ordinal", 1),
        ("memberId", "globex"),
    ],
)
def test_node_identity_is_immutable(field: str, value: Any) -> None:
    old = node()
    new = node(**{field: value})
    if field == "role":
        new["spec"].pop("tee")
    assert f".spec.{field}: {field} is immutable" in cel_errors(CRDS["ConsortiumNode"], new, old)


def test_node_retirement_is_one_way() -> None:
    crd = CRDS["ConsortiumNode"]
    assert cel_errors(crd, node(retire=True), node()) == []
    assert cel_errors(crd, node(retire=False), node(retire=True)) == [
        ".spec.retire: a retiring node cannot be un-retired"
    ]


# --- CEL: cross-field rules -------------------------------------------------------------------------


def _dev_consortium(**spec: Any) -> Json:
    c = consortium()
    c["spec"].update(environment="development", **spec)
    c["spec"]["tee"]["platforms"] = ["virtual"]
    return c


def test_virtual_platform_only_in_development() -> None:
    crd = CRDS["Consortium"]
    assert errors(_dev_consortium()) == []
    for env in ("staging", "production"):
        c = _dev_consortium()
        c["spec"]["environment"] = env
        assert cel_errors(crd, c) == [".spec: the virtual TEE platform is only allowed when environment is development"]
    # Defaulted environment is production: virtual is refused when environment is left out.
    c = _dev_consortium()
    del c["spec"]["environment"]
    assert ".spec: the virtual TEE platform is only allowed when environment is development" in cel_errors(crd, c)


def test_debug_enclaves_only_in_development() -> None:
    crd = CRDS["Consortium"]
    c = consortium()
    c["spec"]["attestation"]["allowDebug"] = True
    assert cel_errors(crd, c) == [".spec: debug enclaves are only allowed when environment is development"]
    d = _dev_consortium()
    d["spec"]["attestation"]["allowDebug"] = True
    assert cel_errors(crd, d) == []


def test_production_needs_allowed_measurements() -> None:
    c = consortium()
    del c["spec"]["attestation"]
    assert cel_errors(CRDS["Consortium"], c) == [
        ".spec: production consortiums need attestation.measurementsConfigMapRef (allowed measurements)"
    ]
    d = _dev_consortium()
    del d["spec"]["attestation"]
    assert cel_errors(CRDS["Consortium"], d) == []


@pytest.mark.parametrize(
    ("constitution", "ok"),
    [
        ({"memberQuorum": "KOfN", "k": 2}, True),
        ({"memberQuorum": "KOfN"}, False),
        ({"memberQuorum": "Weighted", "weightThresholdPercent": 60}, True),
        ({"memberQuorum": "Weighted"}, False),
        ({"memberQuorum": "Unanimity"}, True),
        ({}, True),
    ],
)
def test_constitution_quorum_parameters(constitution: Json, ok: bool) -> None:
    c = consortium()
    c["spec"]["constitution"] = constitution
    assert (errors(c) == []) is ok


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"weight": 3}, "weight applies to Voting members only"),
        ({"sequencerStandbys": 1}, "only Voting members run sequencer standbys"),
    ],
)
def test_participant_restrictions(spec: Json, message: str) -> None:
    m = member(2)
    assert m["spec"]["role"] == "Participant"
    m["spec"].update(spec)
    if "sequencerStandbys" in spec:
        m["spec"]["executors"] = 1
    assert cel_errors(CRDS["ConsortiumMember"], m) == [f".spec: {message}"]


def test_standbys_need_an_executor() -> None:
    m = member()
    m["spec"].update(executors=0, sequencerStandbys=1)
    assert cel_errors(CRDS["ConsortiumMember"], m) == [
        ".spec: a member running sequencer standbys must also run at least one executor"
    ]


def test_identity_is_exactly_one_source_and_private_key_needs_opt_in() -> None:
    crd = CRDS["ConsortiumMember"]
    both = member()
    both["spec"]["identity"]["publicKeyPem"] = member(2)["spec"]["identity"]["publicKeyPem"]
    assert cel_errors(crd, both) == [".spec.identity: set exactly one of secretRef and publicKeyPem"]
    neither = member()
    del neither["spec"]["identity"]["secretRef"]
    assert cel_errors(crd, neither) == [".spec.identity: set exactly one of secretRef and publicKeyPem"]
    private = member()
    private["spec"]["identity"]["secretRef"]["privateKeyKey"] = "tls.key"
    assert cel_errors(crd, private) == [".spec.identity: secretRef.privateKeyKey requires inClusterSigning to be true"]
    private["spec"]["identity"]["inClusterSigning"] = True
    assert errors(private) == []


def test_node_tee_rules() -> None:
    crd = CRDS["ConsortiumNode"]
    assert errors(node()) == []
    seq = node(role="Sequencer")
    assert cel_errors(crd, seq) == [".spec: sequencers run outside the TEE and take no tee.platform"]
    del seq["spec"]["tee"]
    assert errors(seq) == []
    bare = node()
    del bare["spec"]["tee"]
    assert cel_errors(crd, bare) == [".spec: executors need tee.platform"]


def test_reverify_interval_default_is_the_operators() -> None:
    """The CRD default and the operator's own (used when an old CRD pruned the field) are one value."""
    from conclavium_operator.reverify import DEFAULT_INTERVAL

    c = consortium()
    c["spec"].pop("attestation", None)
    spec = apply_defaults(crd_schema(CRDS["Consortium"]), c)["spec"]
    assert spec["attestation"]["reverifyInterval"] == DEFAULT_INTERVAL == "1h"
