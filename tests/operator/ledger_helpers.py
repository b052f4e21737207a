"""Ledger-side helpers for the operator tests: member keys of the local network, votes, and a node
joining under a given name (what a real executor pod would do once its StatefulSet runs)."""

from __future__ import annotations

import base64
import time
from typing import Any

import nats

from conclavium import node_messages, streams
from conclavium.attestation import expected_report_data, make_virtual_evidence
from conclavium.block import IntakeBatch, encode
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


def member_pem(net: LocalNetwork, index: int) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of the local network's member `index`."""
    m = net.members[index]
    return (net.dir / m["cert"]).read_text(), (net.dir / m["key"]).read_text()


async def vote(net: LocalNetwork, proposal_id: str, voters: list[int], approve: bool = True) -> dict[str, Any]:
    """Members `voters` vote; returns the proposal as read at the last ballot's height or later
    (an executor that has not yet applied that ballot would still answer Open)."""
    height = 0
    for i in voters:
        async with Client(net.gateway_url, net.member_key(i)) as c:
            ballot = await c.vote(proposal_id, approve)
            st = await c.wait(ballot["tx_hash"])
            assert st["status"] == "Committed", st
            height = max(height, int(st["height"]))
    return await proposal(net, proposal_id, height)


async def proposal(net: LocalNetwork, proposal_id: str, min_height: int = 0) -> dict[str, Any]:
    async with Client(net.gateway_url) as c:
        c.seen_height = max(c.seen_height, min_height)
        return await c.proposal(proposal_id)


async def service(net: LocalNetwork) -> dict[str, Any]:
    async with Client(net.gateway_url) as c:
        return await c.service()


async def join_node(net: LocalNetwork, name: str) -> str:
    """Publish an attested (virtual TEE) join for a node called `name`; returns its node id."""
    key = PrivateKey.generate()
    enc = sealing.public_bytes(sealing.generate_key())
    bound = node_messages.bound_keys(key.public_key.spki, enc)
    evidence = make_virtual_evidence(
        bytes.fromhex(node_messages.VIRTUAL_DEV_MEASUREMENT), b"", expected_report_data(bound)
    )
    info = node_messages.NodeInfo(
        id=key.key_id,
        signing_key=key.public_key.pem,
        encryption_key=enc.hex(),
        evidence={"platform": "virtual", "evidence": base64.b64encode(evidence).decode()},
        name=name,
    )
    msg = node_messages.Join(v=1, ledger=net.opt.ledger, ts=int(time.time() * 1000), node=info)
    entry = node_messages.make_entry(msg, key)
    nc = await nats.connect(net.nats_url)
    try:
        await nc.jetstream().publish(streams.intake_subject(net.opt.ledger), encode(IntakeBatch(entries=[entry])))
    finally:
        await nc.close()
    return key.key_id
