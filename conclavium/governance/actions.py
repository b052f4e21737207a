"""Governance actions: strict argument validation and their effect on the governance tables.

`validate_actions` checks shape only (no state) and normalises; `apply_actions` checks each
action's preconditions against the current state and writes it. The engine runs `apply_actions`
twice: as a dry run when a proposal opens (so an impossible proposal is refused at once) and for
real when it is accepted. Consequences outside the tables (secrets, node handover) are returned as
effects for the executor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from conclavium import apps, consortium, quorum, rules, sawtooth
from conclavium.attestation import PolicyError, load_policy
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.eth import chain as eth_chain
from conclavium.governance import constitution as const
from conclavium.governance.model import (
    ACTION_NAMES,
    ACTIVE,
    COMMIT_QUORUM_KEY,
    CONSORTIUM,
    CONSORTIUM_KEY,
    CONSTITUTION,
    CONSTITUTION_KEY,
    MAP_POLICIES,
    MEASUREMENTS,
    MEMBERS,
    NODE_PENDING,
    NODE_POLICY_KEY,
    NODE_RETIRED,
    NODE_TRUSTED,
    NODES,
    NOTARY_PARTIES_KEY,
    RECOVERY_THRESHOLD_KEY,
    REMOVED,
    SAWTOOTH_FAMILIES_KEY,
    SERVICE,
    SERVICE_CONFIG_KEY,
    SERVICE_OPEN,
    SERVICE_STATE_KEY,
    USERS,
    Context,
    GovernanceError,
    Tables,
)
from conclavium.sawtooth import signing as sawtooth_signing

PLATFORMS: tuple[str, ...] = ("snp", "tdx", "sgx", "virtual")
MAX_ACTIONS = 64
MAX_PEM_CHARS = 16384
MAX_MEASUREMENT_BYTES = 64
MAX_WEIGHT = 1_000_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

Action = dict[str, Any]
Effect = dict[str, Any]


# ---- argument checks -------------------------------------------------------------------------


def _fields(args: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    unknown = sorted(k for k in args if k not in required and k not in optional)
    if unknown:
        raise GovernanceError(f"unknown argument(s) {', '.join(unknown)}")
    missing = [k for k in required if k not in args]
    if missing:
        raise GovernanceError(f"missing argument(s) {', '.join(missing)}")


def _name(value: object, what: str = "name") -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise GovernanceError(
            f"{what} must be 1-64 characters of letters, digits, space . _ @ -, starting with a "
            f"letter or digit; got {value!r}"
        )
    return value


def _public_key(value: object) -> tuple[str, str]:
    """Return (pem as given, key id); refuses private keys, which must never enter the ledger."""
    if not isinstance(value, str) or not value.strip():
        raise GovernanceError("public_key must be a PEM string (public key or X.509 certificate)")
    if len(value) > MAX_PEM_CHARS:
        raise GovernanceError(f"public_key longer than {MAX_PEM_CHARS} characters")
    if "-----BEGIN" not in value:
        raise GovernanceError("public_key must be PEM")
    if "PRIVATE KEY" in value:
        raise GovernanceError("public_key is a PRIVATE key: never put a private key in a proposal")
    try:
        key = PublicKey.load(value)
    except KeyError_ as e:
        raise GovernanceError(f"public_key: {e}") from e
    return value.strip() + "\n", key.key_id


def _key_id(value: object, what: str) -> str:
    if not const.is_key_id(value):
        raise GovernanceError(f"{what} must be a key id (64 lowercase hex digits), got {value!r}")
    assert isinstance(value, str)
    return value


def check_hex(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) % 2:
        raise GovernanceError(f"{what} must be a non-empty even-length hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise GovernanceError(f"{what} is not hex: {value!r}") from e
    if len(raw) > MAX_MEASUREMENT_BYTES:
        raise GovernanceError(f"{what} longer than {MAX_MEASUREMENT_BYTES} bytes")
    return raw.hex()


def check_platform(value: object) -> str:
    if value not in PLATFORMS:
        raise GovernanceError(f"platform must be one of {', '.join(PLATFORMS)}, got {value!r}")
    assert isinstance(value, str)
    return value


def check_node_id(value: object) -> str:
    if not isinstance(value, str) or not _NODE_ID_RE.match(value):
        raise GovernanceError(f"node_id must be 1-128 characters of letters, digits . _ : -; got {value!r}")
    return value


def _one_of(args: dict[str, Any], id_field: str) -> dict[str, Any]:
    """For removals: exactly one of `<id_field>` or `name`."""
    _fields(args, (), (id_field, "name"))
    if (id_field in args) == ("name" in args):
        raise GovernanceError(f"give exactly one of {id_field} or name")
    if id_field in args:
        return {id_field: _key_id(args[id_field], id_field)}
    return {"name": _name(args["name"])}


def _v_set_member(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("name", "public_key"), ("weight", "encryption_key"))
    pem, _ = _public_key(args["public_key"])
    weight = args.get("weight", 1)
    if type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
        raise GovernanceError(f"weight must be an integer in [1, {MAX_WEIGHT}], got {weight!r}")
    out = {"name": _name(args["name"]), "public_key": pem, "weight": weight}
    if args.get("encryption_key") is not None:
        out["encryption_key"] = check_encryption_key(args["encryption_key"])
    return out


def check_encryption_key(value: object) -> str:
    """A member's X25519 public key for recovery shares: 64 hex digits (32 raw bytes)."""
    if not isinstance(value, str) or len(value) != 64:
        raise GovernanceError("encryption_key must be an X25519 public key, 64 hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise GovernanceError("encryption_key is not hex") from None
    return raw.hex()


def _v_set_recovery_threshold(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("threshold",))
    threshold = args["threshold"]
    if type(threshold) is not int or not 1 <= threshold <= 255:
        raise GovernanceError(f"threshold must be an integer in [1, 255], got {threshold!r}")
    return {"threshold": threshold}


def _v_set_user(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("name", "public_key"))
    pem, _ = _public_key(args["public_key"])
    return {"name": _name(args["name"]), "public_key": pem}


def _v_allow_measurement(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("platform", "measurement"), ("host_data",))
    out: dict[str, Any] = {
        "platform": check_platform(args["platform"]),
        "measurement": check_hex(args["measurement"], "measurement"),
        "host_data": None,
    }
    if args.get("host_data") is not None:
        out["host_data"] = check_hex(args["host_data"], "host_data")
    return out


def _v_disallow_measurement(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("measurement",), ("platform",))
    out: dict[str, Any] = {"measurement": check_hex(args["measurement"], "measurement")}
    if "platform" in args:
        out["platform"] = check_platform(args["platform"])
    return out


def _v_node(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("node_id",))
    return {"node_id": check_node_id(args["node_id"])}


def _v_set_constitution(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("constitution",))
    return {"constitution": const.validate_constitution(args["constitution"])}


def _v_none(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ())
    return {}


def _v_set_commit_quorum(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("quorum",))
    quorum = args["quorum"]
    if type(quorum) is not int or not 1 <= quorum <= 1000:
        raise GovernanceError(f"quorum must be an integer in [1, 1000], got {quorum!r}")
    return {"quorum": quorum}


def _v_set_map_policy(args: dict[str, Any]) -> dict[str, Any]:
    """Who besides an entry's writer may read a private map, and who may write it (None: anyone)."""
    _fields(args, ("map",), ("readers", "writers"))
    name = args["map"]
    if not isinstance(name, str) or not name or name.startswith(("public:gov.", "public:sys.", "gov.", "sys.")):
        raise GovernanceError("map must be the name of an application map")
    out: dict[str, Any] = {"map": name, "readers": [], "writers": None}
    for field_name in ("readers", "writers"):
        value = args.get(field_name, out[field_name])
        if value is None and field_name == "writers":
            continue
        if not isinstance(value, list):
            raise GovernanceError(f"{field_name} must be a list of key ids")
        out[field_name] = sorted({_key_id(v, field_name) for v in value})
    return out


MAX_POLICY_CHARS = 65536


def _v_set_node_policy(args: dict[str, Any]) -> dict[str, Any]:
    """The whole node policy (docs/attestation.md), validated as the executors will load it.

    Measurements stay in their own table (allow_measurement / disallow_measurement), so a policy
    naming them is refused rather than silently overridden.
    """
    _fields(args, ("policy",))
    policy = args["policy"]
    if not isinstance(policy, dict):
        raise GovernanceError("policy must be an object")
    if "measurements" in policy:
        raise GovernanceError("policy cannot carry measurements; use allow_measurement / disallow_measurement")
    if len(json.dumps(policy)) > MAX_POLICY_CHARS:
        raise GovernanceError(f"policy longer than {MAX_POLICY_CHARS} characters")
    try:
        load_policy(policy)
    except PolicyError as e:
        raise GovernanceError(f"invalid node policy: {e.check}: {e.message}") from e
    return {"policy": policy}


def _v_set_rules_version(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("version", "activation_height"))
    version, height = args["version"], args["activation_height"]
    if type(version) is not int or not 1 <= version <= 1_000_000:
        raise GovernanceError(f"version must be a positive integer, got {version!r}")
    if type(height) is not int or not 1 <= height < 2**53:
        raise GovernanceError(f"activation_height must be a positive integer, got {height!r}")
    return {"version": version, "activation_height": height}


MAX_APPLICATIONS = 32


def _v_set_applications(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("applications",))
    names = args["applications"]
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_APPLICATIONS:
        raise GovernanceError(f"applications must be a list of 1 to {MAX_APPLICATIONS} names")
    for name in names:
        if not isinstance(name, str) or not apps.NAME.fullmatch(name):
            raise GovernanceError(f"invalid application name {str(name)[:40]!r}")
    if len(set(names)) != len(names):
        raise GovernanceError("applications are named once each")
    return {"applications": sorted(names)}


MAX_NOTARY_PARTIES = 1000


def _v_set_notary_parties(args: dict[str, Any]) -> dict[str, Any]:
    _fields(args, ("parties",))
    parties = args["parties"]
    if not isinstance(parties, list) or len(parties) > MAX_NOTARY_PARTIES:
        raise GovernanceError(f"parties must be a list of at most {MAX_NOTARY_PARTIES} key ids")
    for p in parties:
        _key_id(p, "a notary party")
    if len(set(parties)) != len(parties):
        raise GovernanceError("parties are named once each")
    return {"parties": sorted(parties)}


def _v_set_quorum_party(args: dict[str, Any]) -> dict[str, Any]:
    """A Quorum party key with the user (or member) it acts for and the member whose executors
    serve it (docs/quorum.md); `{"public_key", "remove": true}` removes one."""
    if args.get("remove") is not None:
        _fields(args, ("public_key", "remove"))
        if args["remove"] is not True:
            raise GovernanceError("remove must be true when given")
    else:
        _fields(args, ("public_key", "owner", "member"))
        _key_id(args["owner"], "owner")
        _key_id(args["member"], "member")
    try:
        quorum.party_key(args["public_key"])
    except quorum.PartyKeyError as e:
        raise GovernanceError(str(e)) from None
    return dict(args)


MAX_ETH_ACCOUNTS = 1000


def _v_set_eth_chain(args: dict[str, Any]) -> dict[str, Any]:
    if not args:
        raise GovernanceError("name at least one chain setting")
    try:
        return eth_chain.validate_chain(args)
    except ValueError as e:
        raise GovernanceError(str(e)) from None


def _v_eth_alloc(args: dict[str, Any]) -> dict[str, Any]:
    """Balances to set, like geth's genesis `alloc`: {"balances": {address: wei}}."""
    _fields(args, ("balances",))
    balances = args["balances"]
    if not isinstance(balances, dict) or not 1 <= len(balances) <= MAX_ETH_ACCOUNTS:
        raise GovernanceError(f"balances must map 1 to {MAX_ETH_ACCOUNTS} addresses to amounts")
    out: dict[str, str] = {}
    try:
        for address, amount in balances.items():
            out[eth_chain.check_address(address)] = hex(eth_chain.parse_wei(amount, f"balance of {address}"))
    except ValueError as e:
        raise GovernanceError(str(e)) from None
    if len(out) != len(balances):
        raise GovernanceError("an address is named twice")
    return {"balances": out}


MAX_SAWTOOTH_FAMILIES = 100
TP_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _v_set_sawtooth_families(args: dict[str, Any]) -> dict[str, Any]:
    """The Sawtooth families the ledger runs (the whole list): name, version and, optionally, the
    digest of the TP image approved for it (recorded for audit; executors run the TP they attest);
    optionally who may sign batches and transactions: `registered` signers only (the default) or
    any (`open`, for development)."""
    _fields(args, ("families",), ("signers",))
    signers = args.get("signers")
    if signers is not None and signers not in sawtooth.SIGNER_POLICIES:
        raise GovernanceError(f"signers is one of {', '.join(sawtooth.SIGNER_POLICIES)}")
    fams = args["families"]
    if not isinstance(fams, list) or len(fams) > MAX_SAWTOOTH_FAMILIES:
        raise GovernanceError(f"families must be a list of at most {MAX_SAWTOOTH_FAMILIES}")
    out = []
    for f in fams:
        if (
            not isinstance(f, dict)
            or not {"name", "version"} <= set(f)
            or not set(f) <= {"name", "version", "tp_digest"}
        ):
            raise GovernanceError('a family is {"name", "version"} with an optional "tp_digest"')
        name, version = f["name"], f["version"]
        if not isinstance(name, str) or not 0 < len(name) <= 128 or not name.isprintable():
            raise GovernanceError("a family name is 1 to 128 printable characters")
        if not isinstance(version, str) or not 0 < len(version) <= 32 or not version.isprintable():
            raise GovernanceError("a family version is 1 to 32 printable characters")
        if "tp_digest" in f and not (isinstance(f["tp_digest"], str) and TP_DIGEST.fullmatch(f["tp_digest"])):
            raise GovernanceError("tp_digest is sha256: and 64 lowercase hex digits")
        out.append(dict(f))
    if len({(f["name"], f["version"]) for f in out}) != len(out):
        raise GovernanceError("a family and version are named once")
    families = sorted(out, key=lambda f: (f["name"], f["version"]))
    return {"families": families, **({"signers": signers} if signers is not None else {})}


MAX_SAWTOOTH_SIGNERS = 1000


def _v_sawtooth_register(args: dict[str, Any]) -> dict[str, Any]:
    """Sawtooth signers (compressed secp256k1 public keys, hex) that may sign batches and
    transactions under the `registered` signer policy (or, with "remove", no longer)."""
    _fields(args, ("public_keys",), ("remove",))
    keys, remove = args["public_keys"], args.get("remove", False)
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_SAWTOOTH_SIGNERS:
        raise GovernanceError(f"public_keys must be a list of 1 to {MAX_SAWTOOTH_SIGNERS} keys")
    if not all(isinstance(k, str) and sawtooth_signing.HEX_KEY.fullmatch(k) for k in keys):
        raise GovernanceError("a Sawtooth public key is a compressed secp256k1 key: 66 lowercase hex digits")
    if type(remove) is not bool:
        raise GovernanceError("remove must be true or false")
    return {"public_keys": sorted(set(keys)), "remove": remove}


def _v_eth_register(args: dict[str, Any]) -> dict[str, Any]:
    """Accounts that may send under the `registered` sender policy (or, with "remove", no longer)."""
    _fields(args, ("accounts",), ("remove",))
    accounts, remove = args["accounts"], args.get("remove", False)
    if not isinstance(accounts, list) or not 1 <= len(accounts) <= MAX_ETH_ACCOUNTS:
        raise GovernanceError(f"accounts must be a list of 1 to {MAX_ETH_ACCOUNTS} addresses")
    if type(remove) is not bool:
        raise GovernanceError("remove must be true or false")
    try:
        out = sorted({eth_chain.check_address(a) for a in accounts})
    except ValueError as e:
        raise GovernanceError(str(e)) from None
    return {"accounts": out, "remove": remove}


def _v_set_consortium_identity(args: dict[str, Any]) -> dict[str, Any]:
    """The next consortium identity, signed by members (conclavium.consortium); its signatures are
    checked against the current version when the action applies."""
    _fields(args, ("identity",))
    doc = args["identity"]
    if not isinstance(doc, dict) or set(doc) != {"identity", "signatures"} or not isinstance(doc["signatures"], list):
        raise GovernanceError("identity must be a signed identity document {identity, signatures}")
    try:
        body = consortium.normalise(doc["identity"])
    except consortium.IdentityError as e:
        raise GovernanceError(f"identity: {e.message}", e.code) from None
    return {"identity": {"identity": body, "signatures": doc["signatures"]}}


_VALIDATORS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "set_member": _v_set_member,
    "remove_member": lambda a: _one_of(a, "member_id"),
    "set_user": _v_set_user,
    "remove_user": lambda a: _one_of(a, "user_id"),
    "allow_measurement": _v_allow_measurement,
    "disallow_measurement": _v_disallow_measurement,
    "trust_node": _v_node,
    "retire_node": _v_node,
    "set_constitution": _v_set_constitution,
    "rotate_ledger_secret": _v_none,
    "open_service": _v_none,
    "set_commit_quorum": _v_set_commit_quorum,
    "set_map_policy": _v_set_map_policy,
    "set_node_policy": _v_set_node_policy,
    "set_rules_version": _v_set_rules_version,
    "set_applications": _v_set_applications,
    "set_notary_parties": _v_set_notary_parties,
    "set_recovery_threshold": _v_set_recovery_threshold,
    "set_eth_chain": _v_set_eth_chain,
    "eth_alloc": _v_eth_alloc,
    "eth_register": _v_eth_register,
    "set_sawtooth_families": _v_set_sawtooth_families,
    "set_consortium_identity": _v_set_consortium_identity,
    "sawtooth_register": _v_sawtooth_register,
    "set_quorum_party": _v_set_quorum_party,
}
assert tuple(_VALIDATORS) == ACTION_NAMES


def validate_action(action: object) -> Action:
    """Check one `{"name": ..., "args": {...}}` and return it normalised."""
    if not isinstance(action, dict):
        raise GovernanceError("an action must be an object with name and args")
    unknown = sorted(k for k in action if k not in ("name", "args"))
    if unknown:
        raise GovernanceError(f"action has unknown field(s) {', '.join(unknown)}")
    name = action.get("name")
    if name not in _VALIDATORS:
        raise GovernanceError(f"unknown action {name!r}")
    args = action.get("args", {})
    if not isinstance(args, dict):
        raise GovernanceError(f"{name}: args must be an object")
    try:
        return {"name": name, "args": _VALIDATORS[name](args)}
    except GovernanceError as e:
        raise GovernanceError(f"{name}: {e}") from e


def validate_actions(actions: object) -> list[Action]:
    """Check a proposal's action list; any bad action makes the whole proposal invalid."""
    if not isinstance(actions, list) or not actions:
        raise GovernanceError("actions must be a non-empty list")
    if len(actions) > MAX_ACTIONS:
        raise GovernanceError(f"at most {MAX_ACTIONS} actions per proposal")
    out = []
    for i, action in enumerate(actions):
        try:
            out.append(validate_action(action))
        except GovernanceError as e:
            raise GovernanceError(f"action {i}: {e}") from e
    return out


# ---- application -------------------------------------------------------------------------------


def _active(tables: Tables, map: str) -> dict[str, Any]:
    return {k: v for k, v in sorted(tables.items(map)) if v.get("status") == ACTIVE}


def _find(tables: Tables, map: str, args: dict[str, Any], id_field: str, what: str) -> tuple[str, Any]:
    active = _active(tables, map)
    if id_field in args:
        key = args[id_field]
        if key not in active:
            known = tables.get(map, key)
            state = "was removed" if known is not None else "does not exist"
            raise GovernanceError(f"{what} {key} {state}")
        return key, active[key]
    matches = [(k, v) for k, v in active.items() if v["name"] == args["name"]]
    if not matches:
        raise GovernanceError(f"no active {what} named {args['name']!r}")
    return matches[0]


def _a_set_member(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    key_id = PublicKey.load(args["public_key"]).key_id
    user = tables.get(USERS, key_id)
    if user is not None and user.get("status") == ACTIVE:
        raise GovernanceError(f"key {key_id} is an active user's key; a key has one role")
    for other_id, other in _active(tables, MEMBERS).items():
        if other_id != key_id and other["name"] == args["name"]:
            raise GovernanceError(f"name {args['name']!r} is taken by member {other_id}")
    row = {"name": args["name"], "public_key": args["public_key"], "weight": args["weight"], "status": ACTIVE}
    if args.get("encryption_key"):
        row["encryption_key"] = args["encryption_key"]
    tables.put(MEMBERS, key_id, row)
    _check_recovery_holders(tables)
    return []


def recovery_holders(tables: Tables) -> dict[str, Any]:
    """Active members with an encryption key: each holds one recovery share."""
    return {k: v for k, v in _active(tables, MEMBERS).items() if v.get("encryption_key")}


def _check_recovery_holders(tables: Tables) -> None:
    threshold = tables.get(SERVICE, RECOVERY_THRESHOLD_KEY)
    holders = len(recovery_holders(tables))
    if isinstance(threshold, int) and threshold > holders:
        raise GovernanceError(
            f"the recovery threshold {threshold} would exceed the {holders} member(s) with an encryption key"
        )


def _a_set_recovery_threshold(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """k of the members holding an encryption key reconstruct the ledger secrets after total loss."""
    tables.put(SERVICE, RECOVERY_THRESHOLD_KEY, args["threshold"])
    _check_recovery_holders(tables)
    return [{"type": "set_recovery_threshold", "threshold": args["threshold"]}]


def _a_remove_member(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    key_id, member = _find(tables, MEMBERS, args, "member_id", "member")
    if len(_active(tables, MEMBERS)) <= 1:
        raise GovernanceError("cannot remove the last active member")
    member["status"] = REMOVED
    tables.put(MEMBERS, key_id, member)
    _check_recovery_holders(tables)
    return []


def _a_set_user(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    key_id = PublicKey.load(args["public_key"]).key_id
    member = tables.get(MEMBERS, key_id)
    if member is not None and member.get("status") == ACTIVE:
        raise GovernanceError(f"key {key_id} is an active member's key; a key has one role")
    for other_id, other in _active(tables, USERS).items():
        if other_id != key_id and other["name"] == args["name"]:
            raise GovernanceError(f"name {args['name']!r} is taken by user {other_id}")
    tables.put(USERS, key_id, {"name": args["name"], "public_key": args["public_key"], "status": ACTIVE})
    return []


def _a_remove_user(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    key_id, user = _find(tables, USERS, args, "user_id", "user")
    user["status"] = REMOVED
    tables.put(USERS, key_id, user)
    return []


def _a_allow_measurement(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    entry = {"platform": args["platform"], "host_data": args["host_data"]}
    tables.put(MEASUREMENTS, args["measurement"], entry)
    return []


def _trusted_nodes(tables: Tables) -> dict[str, Any]:
    return {k: v for k, v in sorted(tables.items(NODES)) if v.get("status") == NODE_TRUSTED}


def _a_disallow_measurement(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    measurement = args["measurement"]
    current = tables.get(MEASUREMENTS, measurement)
    if current is None:
        raise GovernanceError(f"measurement {measurement} is not allowed, nothing to disallow")
    if "platform" in args and current["platform"] != args["platform"]:
        raise GovernanceError(f"measurement {measurement} is allowed for {current['platform']}, not {args['platform']}")
    users = sorted(k for k, v in _trusted_nodes(tables).items() if v.get("measurement") == measurement)
    if users:
        raise GovernanceError(
            f"trusted node(s) {', '.join(users)} run measurement {measurement}; retire them first "
            "(retire_node actions may precede this one in the same proposal)"
        )
    tables.delete(MEASUREMENTS, measurement)
    return []


def _node(tables: Tables, node_id: str) -> dict[str, Any]:
    node = tables.get(NODES, node_id)
    if node is None:
        raise GovernanceError(f"node {node_id} is not known (it must have requested to join)")
    return node


def _a_trust_node(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    node_id = args["node_id"]
    node = _node(tables, node_id)
    if node["status"] != NODE_PENDING:
        raise GovernanceError(f"node {node_id} is {node['status']}, only a Pending node can be trusted")
    measurement = node.get("measurement")
    if measurement is not None and tables.get(MEASUREMENTS, measurement) is None:
        raise GovernanceError(f"node {node_id} runs measurement {measurement}, which is not allowed")
    node["status"] = NODE_TRUSTED
    node["trusted_height"] = ctx.height
    tables.put(NODES, node_id, node)
    return [{"type": "trust_node", "node_id": node_id, "public_keys": node.get("public_keys", {})}]


def _a_retire_node(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    node_id = args["node_id"]
    node = _node(tables, node_id)
    if node["status"] == NODE_RETIRED:
        raise GovernanceError(f"node {node_id} is already retired")
    if node["status"] == NODE_TRUSTED:
        remaining = len(_trusted_nodes(tables)) - 1
        quorum = tables.get(SERVICE, COMMIT_QUORUM_KEY) or 1
        if remaining < max(1, quorum):
            raise GovernanceError(
                f"retiring node {node_id} would leave {remaining} trusted node(s), below the commit "
                f"quorum {quorum}; add a node or lower the quorum first"
            )
    node["status"] = NODE_RETIRED
    node["retired_height"] = ctx.height
    tables.put(NODES, node_id, node)
    return [{"type": "retire_node", "node_id": node_id}]


def _a_set_constitution(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    current = tables.get(CONSTITUTION, CONSTITUTION_KEY) or {"version": 0}
    tables.put(CONSTITUTION, CONSTITUTION_KEY, {"version": current["version"] + 1, **args["constitution"]})
    return []


def _a_rotate_ledger_secret(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    return [{"type": "rotate_ledger_secret"}]


def _a_open_service(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    state = tables.get(SERVICE, SERVICE_STATE_KEY) or {}
    if state.get("status") == SERVICE_OPEN:
        raise GovernanceError("the service is already open")
    tables.put(SERVICE, SERVICE_STATE_KEY, {"status": SERVICE_OPEN, "opened_height": ctx.height})
    return [{"type": "open_service"}]


def _a_set_commit_quorum(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    quorum = args["quorum"]
    trusted = len(_trusted_nodes(tables))
    if quorum > trusted:
        raise GovernanceError(f"commit quorum {quorum} exceeds the {trusted} trusted node(s)")
    if 2 * quorum <= trusted:
        raise GovernanceError(
            f"commit quorum {quorum} is not more than half of the {trusted} trusted node(s): two forks "
            "could both commit",
            "quorum_allows_forks",
        )
    tables.put(SERVICE, COMMIT_QUORUM_KEY, quorum)
    return [{"type": "set_commit_quorum", "quorum": quorum}]


def _a_set_map_policy(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    tables.put(MAP_POLICIES, args["map"], {"readers": args["readers"], "writers": args["writers"]})
    return []


def current_node_policy(tables: Tables) -> dict[str, Any]:
    """The node policy every join is judged by: the last `set_node_policy`, else the genesis one."""
    row = tables.get(SERVICE, NODE_POLICY_KEY)
    if row is not None:
        return dict(row["policy"])
    return dict((tables.get(SERVICE, SERVICE_CONFIG_KEY) or {}).get("node_policy", {}))


def _a_set_node_policy(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """Applies to every later join; nodes already trusted are not re-evaluated (see drift)."""
    current = current_node_policy(tables)
    if (
        current.get("environment", "production") == "production"
        and args["policy"].get("environment", "production") != "production"
    ):
        raise GovernanceError("a production ledger's node policy cannot move back to development")
    previous = tables.get(SERVICE, NODE_POLICY_KEY) or {"version": 0}
    tables.put(
        SERVICE, NODE_POLICY_KEY, {"policy": args["policy"], "version": previous["version"] + 1, "height": ctx.height}
    )
    return [{"type": "set_node_policy", "version": previous["version"] + 1}]


def _a_set_rules_version(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """Schedules the version for a later height: every executor switches at the same block, and
    one that does not implement it stops there (the executor's `UnsupportedRules`)."""
    current = rules.record(tables, SERVICE)
    version, height = args["version"], args["activation_height"]
    if version <= current["version"]:
        raise GovernanceError(f"rules version {version} is not above the active version {current['version']}")
    if height <= ctx.height:
        raise GovernanceError(f"activation height {height} is not above the current height {ctx.height}")
    tables.put(
        SERVICE, rules.RULES_KEY, {"version": current["version"], "next": {"version": version, "from_height": height}}
    )
    return [{"type": "set_rules_version", "version": version, "activation_height": height}]


def _a_set_applications(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """Which applications the ledger runs, from the next entry on."""
    if rules.active(tables, SERVICE) < rules.APPLICATIONS_FROM:
        raise GovernanceError(f"applications are governed from rules version {rules.APPLICATIONS_FROM} on")
    tables.put(SERVICE, rules.APPLICATIONS_KEY, args["applications"])
    return [{"type": "set_applications", "applications": args["applications"]}]


def _a_set_notary_parties(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """Who may request notarisations (the whole list): active members or users, by key id."""
    for key_id in args["parties"]:
        row = tables.get(MEMBERS, key_id) or tables.get(USERS, key_id)
        if row is None or row.get("status") != ACTIVE:
            raise GovernanceError(f"notary party {key_id} is not an active member or user")
    tables.put(SERVICE, NOTARY_PARTIES_KEY, args["parties"])
    return []


def _a_set_quorum_party(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """The owner must be an active user or member and the member an active member now; removing
    needs the key to be registered, so a typo is refused rather than a no-op."""
    parties = dict(tables.get(SERVICE, quorum.PARTIES_KEY) or {})
    key = args["public_key"]
    if args.get("remove"):
        if key not in parties:
            raise GovernanceError(f"quorum party key {key} is not registered")
        del parties[key]
    else:
        owner = tables.get(USERS, args["owner"]) or tables.get(MEMBERS, args["owner"])
        if owner is None or owner.get("status") != ACTIVE:
            raise GovernanceError(f"quorum party owner {args['owner']} is not an active user or member")
        member = tables.get(MEMBERS, args["member"])
        if member is None or member.get("status") != ACTIVE:
            raise GovernanceError(f"quorum party member {args['member']} is not an active member")
        if key not in parties and len(parties) >= quorum.MAX_PARTIES:
            raise GovernanceError(f"at most {quorum.MAX_PARTIES} quorum party keys")
        parties[key] = {"owner": args["owner"], "member": args["member"]}
    tables.put(SERVICE, quorum.PARTIES_KEY, parties)
    return []


def _a_set_eth_chain(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """The Ethereum chain settings, merged into the current ones, from the next entry on."""
    current = tables.get(SERVICE, eth_chain.CHAIN_KEY) or eth_chain.ChainConfig().to_json()
    tables.put(SERVICE, eth_chain.CHAIN_KEY, {**current, **args})
    return []


def _a_eth_alloc(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """Set balances (creating the accounts): the consortium's minting, recorded like any vote."""
    for address, balance in args["balances"].items():
        row = tables.get(eth_chain.ACCOUNTS, address)
        nonce, code_hash = (row[0], row[2]) if row else (0, "")
        tables.put(eth_chain.ACCOUNTS, address, [nonce, balance, code_hash])
    return []


def _register(tables: Tables, table: str, ids: list[str], remove: bool, ctx: Context) -> list[Effect]:
    """Add or remove protocol signers (Ethereum accounts, Sawtooth keys) in their registry table."""
    for ident in ids:
        if remove:
            tables.delete(table, ident)
        else:
            tables.put(table, ident, {"registered_at": ctx.height})
    return []


def _a_eth_register(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    return _register(tables, eth_chain.SENDERS, args["accounts"], args["remove"], ctx)


def _a_set_sawtooth_families(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    tables.put(SERVICE, SAWTOOTH_FAMILIES_KEY, args["families"])
    if "signers" in args:
        tables.put(SERVICE, sawtooth.SIGNERS_POLICY_KEY, args["signers"])
    return []


def _a_sawtooth_register(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    return _register(tables, sawtooth.SIGNERS, args["public_keys"], args["remove"], ctx)


def current_identity(tables: Tables) -> dict[str, Any] | None:
    """The ledger's current signed consortium identity document (None before genesis records one)."""
    doc = tables.get(SERVICE, CONSORTIUM_KEY)
    return dict(doc) if doc is not None else None


def record_identity(tables: Tables, doc: dict[str, Any]) -> None:
    """Make `doc` the current identity and keep it in the history every verifier can fetch."""
    tables.put(SERVICE, CONSORTIUM_KEY, doc)
    tables.put(CONSORTIUM, f"{doc['identity']['version']:08d}", doc)


def _a_set_consortium_identity(tables: Tables, args: dict[str, Any], ctx: Context) -> list[Effect]:
    """The next identity, if a threshold of the current one's members signed it; the members table
    becomes its member set, and the nodes it retires are retired."""
    current = current_identity(tables)
    if current is None:
        raise GovernanceError("the ledger has no consortium identity yet", "no_identity")
    doc = args["identity"]
    try:
        nxt = consortium.verify_next(consortium.load(current), doc)
    except consortium.IdentityError as e:
        raise GovernanceError(f"identity: {e.message}", e.code) from None
    listed = {m["id"]: m for m in nxt.body["members"]}
    for key_id, row in _active(tables, MEMBERS).items():
        if key_id not in listed:
            tables.put(MEMBERS, key_id, {**row, "status": REMOVED})
    for key_id, m in listed.items():
        user = tables.get(USERS, key_id)
        if user is not None and user.get("status") == ACTIVE:
            raise GovernanceError(f"key {key_id} is an active user's key; a key has one role")
        row = {"name": m["name"], "public_key": m["public_key"], "weight": m["weight"], "status": ACTIVE}
        if "encryption_key" in m:
            row["encryption_key"] = m["encryption_key"]
        tables.put(MEMBERS, key_id, row)
    for node_id in sorted(nxt.retired):
        node = tables.get(NODES, node_id)
        if node is not None and node["status"] != NODE_RETIRED:
            _a_retire_node(tables, {"node_id": node_id}, ctx)
    record_identity(tables, doc)
    return [{"type": "set_consortium_identity", "version": nxt.version}]


def check_members_match_identity(tables: Tables) -> None:
    """After a proposal's actions: the active members are exactly the current identity's, so the
    member set never changes without a threshold of members signing the next identity."""
    doc = current_identity(tables)
    if doc is None:
        return
    listed = {m["id"]: (m["name"], m["weight"]) for m in doc["identity"]["members"]}
    active = {k: (v["name"], v["weight"]) for k, v in _active(tables, MEMBERS).items()}
    if active != listed:
        raise GovernanceError(
            "the members would differ from the consortium identity: membership changes come with "
            "set_consortium_identity (the next identity, signed by a threshold of the current members)",
            "membership_needs_identity",
        )


_APPLIERS: dict[str, Callable[[Tables, dict[str, Any], Context], list[Effect]]] = {
    "set_member": _a_set_member,
    "remove_member": _a_remove_member,
    "set_user": _a_set_user,
    "remove_user": _a_remove_user,
    "allow_measurement": _a_allow_measurement,
    "disallow_measurement": _a_disallow_measurement,
    "trust_node": _a_trust_node,
    "retire_node": _a_retire_node,
    "set_constitution": _a_set_constitution,
    "rotate_ledger_secret": _a_rotate_ledger_secret,
    "open_service": _a_open_service,
    "set_commit_quorum": _a_set_commit_quorum,
    "set_map_policy": _a_set_map_policy,
    "set_node_policy": _a_set_node_policy,
    "set_rules_version": _a_set_rules_version,
    "set_applications": _a_set_applications,
    "set_notary_parties": _a_set_notary_parties,
    "set_recovery_threshold": _a_set_recovery_threshold,
    "set_eth_chain": _a_set_eth_chain,
    "eth_alloc": _a_eth_alloc,
    "eth_register": _a_eth_register,
    "set_sawtooth_families": _a_set_sawtooth_families,
    "set_consortium_identity": _a_set_consortium_identity,
    "sawtooth_register": _a_sawtooth_register,
    "set_quorum_party": _a_set_quorum_party,
}
assert tuple(_APPLIERS) == ACTION_NAMES


def apply_actions(tables: Tables, actions: list[Action], ctx: Context) -> list[Effect]:
    """Apply validated actions in order; raises on the first failing precondition.

    Callers pass a `StagedTables` and commit only on success, which makes the list atomic.
    """
    effects: list[Effect] = []
    for i, action in enumerate(actions):
        try:
            effects.extend(_APPLIERS[action["name"]](tables, action["args"], ctx))
        except GovernanceError as e:
            raise GovernanceError(f"action {i} ({action['name']}): {e}", e.code) from e
    return effects
