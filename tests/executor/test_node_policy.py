"""The node policy under governance, on real blocks through the executor's deterministic core.

`set_node_policy` and allow/disallow_measurement are proposed and voted like any action; they apply
to every later join and to nothing already trusted, which shows up as attestation drift instead.
Collateral travels in the ordered Join entry and is judged at the block's time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from machine_harness import LEDGER, Chain, Node, bootstrap, new_machine

from conclavium import consortium, node_messages
from conclavium.block import Entry, Kind
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e
from conclavium.governance import documents
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from services.executor.ledger_machine import NODES, LedgerMachine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attestation"))
from amd_test_pki import AmdTestPki
from att_vectors import accepting, intel_vectors, snp_vectors
from intel_test_pki import IntelTestPki
from tdx_test_log import BootChain

NEW = "22" * 32
DEV = {"environment": "development", "platforms": ["virtual"]}


async def _run(chain: Chain, machine: LedgerMachine, entries: list[Entry]) -> Any:
    _, out = await machine.apply(*chain.block(entries))
    return out


async def passed(chain: Chain, machine: LedgerMachine, actions: list[dict[str, Any]]) -> str:
    """Propose and vote (the harness has one member); the proposal's final state, or "Refused" when
    its dry run failed and it was never recorded."""
    doc = documents.make_proposal(actions, chain.member, chain.ts // 1000, ledger=LEDGER)
    await _run(chain, machine, [Entry(Kind.GOV, doc, b"")])
    pid = hashlib.sha256(doc).hexdigest()
    ballot = documents.make_ballot(pid, True, chain.member, chain.ts // 1000, ledger=LEDGER)
    await _run(chain, machine, [Entry(Kind.GOV, ballot, b"")])
    row = machine.state.get("public:gov.proposals", pid)
    return row["state"] if row else "Refused"


async def join(chain: Chain, machine: LedgerMachine, node: Node, name: str) -> tuple[str, str] | None:
    """Submit a join; None if it was recorded, else (code, message) of its refusal."""
    msg = node_messages.Join(v=1, ledger=LEDGER, ts=chain.ts, node=node.info(name))
    out = await _run(chain, machine, [node_messages.make_entry(msg, node.key)])
    return (out.invalid[0][1], out.invalid[0][2]) if out.invalid else None


def status(machine: LedgerMachine, node: Node) -> str | None:
    row = machine.state.get(NODES, node.id)
    return row["status"] if row else None


async def test_policy_change_by_vote_refuses_the_next_join_and_shows_drift() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    assert m.attestation_drift() == []
    # Pin host data: every later join must carry it; the three trusted nodes do not, so they drift.
    assert (
        await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": {**DEV, "host_data": ["aa" * 32]}}}])
        == "Accepted"
    )
    late = Node()
    refused = await join(chain, m, late, "late")
    assert refused is not None and refused[0] == "attestation_refused" and "host_data_not_allowed" in refused[1]
    assert status(m, late) is None
    assert len(m.attestation_drift()) == 3, "nothing is re-evaluated retroactively, but drift shows it"
    assert all(status(m, n) == "Trusted" for n in chain.nodes)
    # Back to the unpinned policy: drift clears, joins work again.
    assert await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": DEV}}]) == "Accepted"
    assert m.attestation_drift() == []
    assert await join(chain, m, late, "late") is None


async def test_invalid_or_backward_policies_are_refused_at_proposal() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    from conclavium.governance.model import GovernanceError

    for bad in (
        {"environment": "production", "platforms": ["virtual"]},
        {"measurements": ["00" * 32]},
        {"tcb_statuses": ["Unknown"]},
        {"nonsense": 1},
    ):
        with pytest.raises(GovernanceError):
            documents.make_proposal(
                [{"name": "set_node_policy", "args": {"policy": bad}}], chain.member, 0, ledger=LEDGER
            )
    assert (
        await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": {"platforms": ["snp"]}}}]) == "Accepted"
    )
    # Production cannot go back to development: the proposal's dry run refuses it.
    assert await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": DEV}}]) == "Refused"


async def test_upgrade_walkthrough_through_governance() -> None:
    """Allow the new measurement, add nodes running it, retire old ones one at a time, disallow the old."""
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    old = list(chain.nodes)
    fresh = [Node(measurement=NEW) for _ in range(3)]
    refused = await join(chain, m, fresh[0], "new-0")
    assert refused is not None and "measurement_not_allowed" in refused[1], "the new build needs a vote first"
    assert (
        await passed(chain, m, [{"name": "allow_measurement", "args": {"platform": "virtual", "measurement": NEW}}])
        == "Accepted"
    )
    for i, node in enumerate(fresh):
        assert await join(chain, m, node, f"new-{i}") is None
        assert status(m, node) == "Trusted"
    for node in old:
        assert await passed(chain, m, [{"name": "retire_node", "args": {"node_id": node.id}}]) == "Accepted"
        assert status(m, node) == "Retired"
    assert (
        await passed(
            chain,
            m,
            [{"name": "disallow_measurement", "args": {"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}}],
        )
        == "Accepted"
    )
    straggler = Node()
    refused = await join(chain, m, straggler, "old-build")
    assert refused is not None and "measurement_not_allowed" in refused[1], "the old build can no longer join"
    trusted = {k for k, row in m.state.items(NODES) if row["status"] == "Trusted"}
    assert trusted == {n.id for n in fresh}
    assert m.attestation_drift() == []


V = next(v for v in intel_vectors() if v.name == "tdx/v4-dcapqvl")


def _tdx_node(pki: IntelTestPki, at: dt.datetime, **collateral: Any) -> tuple[Node, node_messages.NodeInfo]:
    node = Node()
    enc = sealing.public_bytes(node.enc)
    bound = node_messages.bound_keys(node.key.public_key.spki, enc)
    from conclavium.attestation import expected_report_data

    quote = pki.requote(V.quote, report_data=expected_report_data(bound))
    col = pki.collateral(V.collateral, at, **collateral)
    evidence = {"platform": "tdx", "evidence": b64e(quote), "collateral": {k: b64e(v) for k, v in col.items()}}
    info = node_messages.NodeInfo(
        id=node.id, signing_key=node.key.public_key.pem, encryption_key=enc.hex(), evidence=evidence, name="tdx"
    )
    return node, info


async def _join_info(
    chain: Chain, m: LedgerMachine, node: Node, info: node_messages.NodeInfo
) -> tuple[str, str] | None:
    msg = node_messages.Join(v=1, ledger=LEDGER, ts=chain.ts, node=info)
    out = await _run(chain, m, [node_messages.make_entry(msg, node.key)])
    return (out.invalid[0][1], out.invalid[0][2]) if out.invalid else None


async def test_tdx_join_judged_at_block_time_and_refused_for_stale_collateral(monkeypatch: pytest.MonkeyPatch) -> None:
    pki = IntelTestPki()
    pki.pin(monkeypatch)
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    now = dt.datetime.fromtimestamp(chain.ts / 1000, dt.UTC)
    node, info = _tdx_node(pki, now, dates=(now - dt.timedelta(days=1), now + dt.timedelta(days=29)))
    from conclavium.attestation import verify_evidence
    from conclavium.encoding import b64d

    claims = verify_evidence(
        "tdx",
        b64d(info.evidence["evidence"]),
        collateral={k: b64d(v) for k, v in info.evidence["collateral"].items()},
        at=now,
    )
    allow = {"name": "allow_measurement", "args": {"platform": "tdx", "measurement": claims.measurement}}
    # A development ledger admits no TEE node, even one its policy would otherwise accept.
    dev_tdx = {**DEV, "platforms": ["virtual", "tdx"]}
    assert await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": dev_tdx}}, allow]) == "Accepted"
    refused = await _join_info(chain, m, node, info)
    assert refused is not None and "development_policy" in refused[1]
    policy = accepting(claims)
    policy.pop("measurements")
    policy["platforms"] = ["tdx"]
    actions = [{"name": "set_node_policy", "args": {"policy": policy}}]
    assert await passed(chain, m, actions) == "Accepted"
    assert len(m.attestation_drift()) == 3, "the virtual nodes no longer meet the production policy"
    assert await _join_info(chain, m, node, info) is None
    assert status(m, node) == "Trusted"
    # Collateral whose CRLs expire a minute from now: refused once the block time passes that.
    late, late_info = _tdx_node(
        pki,
        now,
        dates=(now - dt.timedelta(days=1), now + dt.timedelta(days=29)),
        crl_next_update=now + dt.timedelta(minutes=1),
    )
    chain.ts += 120_000
    refused = await _join_info(chain, m, late, late_info)
    assert refused is not None and refused[0] == "attestation_refused" and "collateral_freshness" in refused[1]
    # Without collateral, or without a CRL, the join is refused, never accepted unchecked.
    bare, bare_info = _tdx_node(pki, now, dates=(now - dt.timedelta(days=1), now + dt.timedelta(days=29)))
    del bare_info.evidence["collateral"]
    refused = await _join_info(chain, m, bare, bare_info)
    assert refused is not None and "collateral_missing" in refused[1]
    nocrl, nocrl_info = _tdx_node(pki, now, dates=(now - dt.timedelta(days=1), now + dt.timedelta(days=29)))
    del nocrl_info.evidence["collateral"]["pck_crl.der"]
    refused = await _join_info(chain, m, nocrl, nocrl_info)
    assert refused is not None and "collateral_missing" in refused[1]


SNP_V = next(v for v in snp_vectors() if v.name == "milan-v2-virtee")


def _snp_node(pki: AmdTestPki, crl: bytes | None) -> tuple[Node, node_messages.NodeInfo]:
    """A node whose real Milan report is re-signed under the AMD test PKI and bound to its keys."""
    from conclavium.attestation import expected_report_data

    node = Node()
    enc = sealing.public_bytes(node.enc)
    report = pki.resign(
        SNP_V.report,
        SNP_V.certs["vcek.der"],
        report_data=expected_report_data(node_messages.bound_keys(node.key.public_key.spki, enc)),
    )
    evidence: dict[str, Any] = {
        "platform": "snp",
        "evidence": b64e(report),
        "certs": {k: b64e(v) for k, v in pki.certs().items()},
    }
    if crl is not None:
        evidence["collateral"] = {"amd_crl.der": b64e(crl)}
    info = node_messages.NodeInfo(
        id=node.id, signing_key=node.key.public_key.pem, encryption_key=enc.hex(), evidence=evidence, name="snp"
    )
    return node, info


async def test_snp_join_needs_the_amd_crl_fresh_at_block_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ARK's CRL travels in the Join entry: accepted while fresh at the block's time; refused
    once stale, when missing (production), or when it revokes the ASK."""
    from conclavium.attestation import verify_evidence
    from conclavium.encoding import b64d

    pki = AmdTestPki("Milan")
    pki.pin(monkeypatch)
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    now = dt.datetime.fromtimestamp(chain.ts / 1000, dt.UTC)
    node, info = _snp_node(pki, pki.crl(now))
    ev = info.evidence
    claims = verify_evidence(
        "snp",
        b64d(ev["evidence"]),
        certs=[b64d(c) for c in ev["certs"].values()],
        collateral={"amd_crl.der": b64d(ev["collateral"]["amd_crl.der"])},
        at=now,
    )
    policy = accepting(claims)
    policy.pop("measurements")
    policy["platforms"] = ["snp"]
    policy["snp"]["vmpl"] = [claims.details["vmpl"]]
    allow = {"name": "allow_measurement", "args": {"platform": "snp", "measurement": claims.measurement}}
    assert await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": policy}}, allow]) == "Accepted"
    assert await _join_info(chain, m, node, info) is None
    assert status(m, node) == "Trusted"
    assert m.state.get(NODES, node.id)["claims"]["details"]["collateral"]["amd_crl"]["next_update"]
    late, late_info = _snp_node(pki, pki.crl(now, next_update=now + dt.timedelta(minutes=1)))
    chain.ts += 120_000
    refused = await _join_info(chain, m, late, late_info)
    assert refused is not None and refused[0] == "attestation_refused" and "collateral_freshness" in refused[1]
    now = dt.datetime.fromtimestamp(chain.ts / 1000, dt.UTC)
    bare, bare_info = _snp_node(pki, None)
    refused = await _join_info(chain, m, bare, bare_info)
    assert refused is not None and "collateral_missing" in refused[1] and "AMD CRL" in refused[1]
    revoked, revoked_info = _snp_node(pki, pki.crl(now, revoke_ask=True))
    refused = await _join_info(chain, m, revoked, revoked_info)
    assert refused is not None and "amd_crl_signed_and_not_revoked" in refused[1]
    assert all(status(m, n) is None for n in (late, bare, revoked))


def _tdx_node_with_log(pki: IntelTestPki, at: dt.datetime, chain: BootChain) -> tuple[Node, node_messages.NodeInfo]:
    """A TDX node whose quote's RTMRs are what `chain`'s event log replays to; the log is in its evidence."""
    from conclavium.attestation import expected_report_data

    node = Node()
    enc = sealing.public_bytes(node.enc)
    bound = node_messages.bound_keys(node.key.public_key.spki, enc)
    quote = pki.requote(V.quote, report_data=expected_report_data(bound), rtmrs=chain.rtmrs())
    col = pki.collateral(V.collateral, at, dates=(at - dt.timedelta(days=1), at + dt.timedelta(days=29)))
    evidence = {
        "platform": "tdx",
        "evidence": b64e(quote),
        "collateral": {k: b64e(v) for k, v in col.items()},
        "event_log": b64e(chain.log()),
    }
    info = node_messages.NodeInfo(
        id=node.id, signing_key=node.key.public_key.pem, encryption_key=enc.hex(), evidence=evidence, name="tdx-log"
    )
    return node, info


async def test_tdx_join_judged_by_its_event_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy on the kernel, initrd and command line (and every event in RTMR1-3) admits the node
    booting them, refuses one booting another kernel or a log that does not replay, and one without a log."""
    from conclavium.attestation import verify_evidence
    from conclavium.encoding import b64d

    pki = IntelTestPki()
    pki.pin(monkeypatch)
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    now = dt.datetime.fromtimestamp(chain.ts / 1000, dt.UTC)
    boot = BootChain()
    node, info = _tdx_node_with_log(pki, now, boot)
    ev = info.evidence
    claims = verify_evidence(
        "tdx",
        b64d(ev["evidence"]),
        collateral={k: b64d(v) for k, v in ev["collateral"].items()},
        event_log=b64d(ev["event_log"]),
        at=now,
    )
    policy = accepting(claims)
    policy.pop("measurements")
    policy["platforms"] = ["tdx"]
    log = claims.details["event_log"]
    for i in (1, 2, 3):
        policy["tdx"].pop(f"rtmr{i}")
    policy["tdx"]["event_log"] = {
        "rtmr1": log["rtmr1"],
        "rtmr2": log["rtmr2"],
        "rtmr3": [],
        "kernel": [boot.kernel_digest.hex()],
        "initrd": [boot.initrd_digest.hex()],
        "cmdline": [boot.cmdline_digest.hex()],
    }
    allow = {"name": "allow_measurement", "args": {"platform": "tdx", "measurement": claims.measurement}}
    assert await passed(chain, m, [{"name": "set_node_policy", "args": {"policy": policy}}, allow]) == "Accepted"
    assert await _join_info(chain, m, node, info) is None
    assert status(m, node) == "Trusted"
    other, other_info = _tdx_node_with_log(pki, now, BootChain(kernel=b"a kernel nobody approved"))
    refused = await _join_info(chain, m, other, other_info)
    assert refused is not None and "event_log_kernel" in refused[0] + refused[1] and "rtmr1" in refused[1]
    forged, forged_info = _tdx_node_with_log(pki, now, boot)
    forged_info.evidence["event_log"] = b64e(BootChain(cmdline="init=/bin/sh").log())
    refused = await _join_info(chain, m, forged, forged_info)
    assert refused is not None and "event_log_replay" in refused[1]
    bare, bare_info = _tdx_node_with_log(pki, now, boot)
    del bare_info.evidence["event_log"]
    refused = await _join_info(chain, m, bare, bare_info)
    assert refused is not None and "event_log_missing" in refused[1]
    assert all(status(m, n) is None for n in (other, forged, bare))


async def test_genesis_on_tee_hardware_needs_a_production_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TDX genesis node refuses a development policy and a genesis its founders did not sign; the
    same genesis under production, signed, succeeds."""
    from conclavium.attestation import verify_evidence
    from conclavium.encoding import b64d

    pki = IntelTestPki()
    pki.pin(monkeypatch)
    chain = Chain()
    now = dt.datetime.fromtimestamp(chain.ts / 1000, dt.UTC)
    tdx = chain.nodes[0]
    enc = sealing.public_bytes(tdx.enc)
    bound = node_messages.bound_keys(tdx.key.public_key.spki, enc)
    from conclavium.attestation import expected_report_data

    quote = pki.requote(V.quote, report_data=expected_report_data(bound))
    col = pki.collateral(V.collateral, now, dates=(now - dt.timedelta(days=1), now + dt.timedelta(days=29)))
    evidence = {"platform": "tdx", "evidence": b64e(quote), "collateral": {k: b64e(v) for k, v in col.items()}}
    info = node_messages.NodeInfo(
        id=tdx.id, signing_key=tdx.key.public_key.pem, encryption_key=enc.hex(), evidence=evidence, name="n0"
    )
    claims = verify_evidence("tdx", b64d(evidence["evidence"]), collateral=col, at=now)
    measurements = [{"platform": "tdx", "measurement": claims.measurement}]
    dev = new_machine(chain)
    dev_policy = {"environment": "development", "platforms": ["virtual", "tdx"]}
    _, out = await dev.apply(*chain.block([chain.genesis_entry(dev_policy, measurements, info)]))
    assert out.invalid and out.invalid[0][1] == "attestation_refused" and "development_policy" in out.invalid[0][2]
    assert not dev.genesis_done

    chain2 = Chain()
    chain2.nodes[0] = tdx
    chain2.ts = chain.ts
    prod = new_machine(chain2)
    policy = accepting(claims)
    policy.pop("measurements")
    policy["platforms"] = ["tdx"]
    # On TEE hardware the founders must have signed the genesis: unsigned, signed by someone else,
    # or signed over another configuration, it is refused.
    unsigned = {"consortium": None}
    _, out = await prod.apply(*chain2.block([chain2.genesis_entry(policy, measurements, info, config=unsigned)]))
    assert [c for _, c, _ in out.invalid] == ["unsigned_genesis"] and not prod.genesis_done
    founders = [{"name": "alice", "public_key": chain2.member.public_key.pem}]
    stranger = consortium.sign(consortium.make_identity(LEDGER, founders, genesis="00" * 32), PrivateKey.generate())
    _, out = await prod.apply(
        *chain2.block([chain2.genesis_entry(policy, measurements, info, config={"consortium": stranger})])
    )
    assert [c for _, c, _ in out.invalid] == ["unsigned_genesis"] and not prod.genesis_done
    other_config = consortium.sign(consortium.make_identity(LEDGER, founders, genesis="00" * 32), chain2.member)
    _, out = await prod.apply(
        *chain2.block([chain2.genesis_entry(policy, measurements, info, config={"consortium": other_config})])
    )
    assert [c for _, c, _ in out.invalid] == ["invalid_genesis"] and not prod.genesis_done
    _, out = await prod.apply(*chain2.block([chain2.genesis_entry(policy, measurements, info)]))
    assert not out.invalid, out.invalid
    assert prod.genesis_done and prod.state.get(NODES, tdx.id)["claims"]["platform"] == "tdx"
