"""Disaster recovery through real processes, following docs/recovery.md's walk-through literally.

Three members (threshold 2), three executors. Public and private data is committed across two
generations of ledger secrets (a rotation), then every executor is killed and every secret wiped
(node keys, ledger secrets, the virtual TEE's sealing key); only ledger files and the NATS stream
remain. A new executor started with `--recover` on a copy of the ledger files replays the public
prefix and waits for shares; a non-member's share, a bad share and a single good share leave it
waiting with reasons; with two members' shares (the CLI) it reconstructs the secrets and the
service resumes: receipts issued before the disaster still verify, old ones are served again.
A commit needs nodes of k = 2 distinct members, so a new write stays pending (`quorum_unreachable`)
and no client seals to the transaction key (one member's node vouches for it) while only the
recovered node (alice's, endorsed by her) can sign; once another member's executor joined and that
member (bob) endorsed it, the pending write commits with a receipt of both members' nodes and
private data of both generations is readable.

Time budget: about 45 s alone on this machine (90 s while others run their tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from conclavium import consortium, receipt, recovery
from conclavium.attestation.providers import VIRTUAL_SEALING_KEY_FILE
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork, start_network
from conclavium.local.processes import Process, free_port, service_command
from conclavium.sdk.client import Client, ClientError

SECRET_FILES = ("node_keys.sealed", "ledger_secrets.sealed", VIRTUAL_SEALING_KEY_FILE)


def _cli(net: LocalNetwork, *args: str) -> subprocess.CompletedProcess[str]:
    """`conclavium --net DIR ...`, as docs/recovery.md has members run it."""
    argv = [*service_command("conclavium", "conclavium.cli.main"), "--net", str(net.dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _executor(net: LocalNetwork, name: str, *extra: str) -> Process:
    """`conclavium-executor --ledger local --nats-url $NATS --name NAME --data-dir DIR/nodes/NAME
    --http-port PORT [--recover]`, exactly as docs/recovery.md starts it."""
    port = free_port()
    argv = [*service_command("conclavium-executor", "services.executor.main"), "--ledger", net.opt.ledger]
    argv += ["--nats-url", net.nats_url, "--name", name, "--data-dir", str(net.dir / "nodes" / name)]
    argv += ["--http-port", str(port), *extra]
    return Process(name, argv, net.dir / "logs" / f"{name}.log", port=port)


def _node(net: LocalNetwork, name: str, status: str) -> dict[str, Any] | None:
    """The node named `name` in `GET $GW/v1/service`, once it has `status`."""
    code, service = _get(f"{net.gateway_url}/v1/service")
    found = [n for n in service.get("nodes", []) if n.get("name") == name] if code == 200 else []
    return found[0] if found and found[0].get("status") == status else None


def _endorse(net: LocalNetwork, member: str, name: str) -> subprocess.CompletedProcess[str]:
    """docs/recovery.md: the member takes its node's signing key from `GET $GW/v1/service` and runs
    `conclavium --net DIR --as MEMBER consortium endorse-node NAME.pem`."""
    _, service = _get(f"{net.gateway_url}/v1/service")
    node = next(n for n in service["nodes"] if n["name"] == name)
    pem = net.dir / f"{name}.pem"
    pem.write_text(node["signing_key"])
    return _cli(net, "--as", member, "consortium", "endorse-node", str(pem))


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except Exception as e:  # HTTPError carries the body
        body = getattr(e, "read", lambda: b"{}")()
        return getattr(e, "code", 0), json.loads(body or b"{}")


async def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached after {timeout}s (last: {last})")


async def _rotate(net: LocalNetwork, members: list[Client]) -> None:
    old = (await members[0].service())["tx_key"]["id"]
    p = await members[0].propose([{"name": "rotate_ledger_secret", "args": {}}])
    await members[0].wait(p["tx_hash"])
    for m in members[:2]:
        await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
    deadline = time.monotonic() + 30
    while (await members[0].service())["tx_key"]["id"] == old:
        assert time.monotonic() < deadline, "no new generation after the rotation"
        await asyncio.sleep(0.2)


def _share_set_covers(net: LocalNetwork, generations: int) -> dict[str, Any] | None:
    status, body = _get(f"{net.gateway_url}/v1/recovery")
    s = body.get("share_set") if status == 200 else None
    return s if s and len(s["generations"]) == generations else None


async def test_recover_after_losing_every_executor(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, redis=True)
    ident = consortium.load_trusted((net.dir / "consortium.json").read_text())
    user = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    writer = Client(net.gateway_url, user, **net.trust())
    members = [Client(net.gateway_url, net.member_key(i)) for i in range(3)]
    recovering: list[Process] = []
    try:
        # Public and private data, in two generations of ledger secrets.
        receipts: dict[str, dict[str, Any]] = {}
        for i in range(5):
            for h in (await writer.put("clinic", f"p{i}", f"before-{i}"), await writer.put("public:notes", f"n{i}", i)):
                receipts[h] = (await writer.wait(h))["receipt"]
        await _rotate(net, members)
        writer._tx_key = None
        for i in range(5, 8):
            h = await writer.put("clinic", f"p{i}", f"after-rotation-{i}")
            receipts[h] = (await writer.wait(h))["receipt"]
        # Step 1: before the disaster, the share set in force covers both generations.
        share_set = await _until(lambda: _share_set_covers(net, 2), "a share set covering both generations")
        assert _get(f"{net.gateway_url}/v1/recovery")[1]["state"] == "running"
        assert share_set["threshold"] == 2 and len(share_set["members"]) == 3

        # The disaster: every executor dies, every secret is gone; ledger files and NATS remain.
        executors = sorted(n for n in net.procs if n.startswith("executor-"))
        for name in executors:
            net.procs[name].kill()
        for name in executors:
            for f in SECRET_FILES:
                (net.dir / "nodes" / name / f).unlink(missing_ok=True)
            assert not any((net.dir / "nodes" / name).glob("*.sealed"))
        await writer.close()

        # docs/recovery.md, step 2: a new executor on a copy of the ledger files, with --recover.
        (net.dir / "nodes" / "recovery-0").mkdir()
        shutil.copytree(net.dir / "nodes" / "executor-0" / "ledger", net.dir / "nodes" / "recovery-0" / "ledger")
        proc = _executor(net, "recovery-0", "--recover")
        port = proc.port
        recovering.append(proc)
        proc.start()
        proc.wait_ready()

        # Step 3: the service says it waits for shares, at the executor's and the gateway's /readyz.
        def waiting(n: int) -> bool:
            code, body = _get(f"http://127.0.0.1:{port}/readyz")
            gw_code, gw = _get(f"{net.gateway_url}/readyz")
            want = f"waiting for recovery shares ({n} of 2)"
            return code == 503 and want in body.get("reason", "") and gw_code == 503 and want in gw["reason"]

        await _until(lambda: waiting(0), "waiting for shares (0 of 2)", 90)
        status = await members[0].recovery()
        assert status["state"] == "waiting_for_shares" and status["share_set"]["threshold"] == 2
        node = status["node"]
        metrics = await asyncio.to_thread(
            lambda: urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        assert "conclavium_executor_recovery_waiting 1.0" in metrics

        # Refusals: a user (no share holder), a share that is not the member's, fewer than k.
        set_id = status["share_set"]["id"]
        garbage = recovery.seal_to_node(
            b"\x01" + os.urandom(16),
            bytes.fromhex(node["encryption_key"]),
            net.opt.ledger,
            set_id,
            user.key_id,
            node["id"],
        )
        doc = recovery.share_document(user, net.opt.ledger, set_id, node["id"], garbage, int(time.time()))
        await members[0].submit_recovery_share(doc)
        carol = net.member_key(2)
        bad = recovery.seal_to_node(
            b"\x03" + os.urandom(16),
            bytes.fromhex(node["encryption_key"]),
            net.opt.ledger,
            set_id,
            carol.key_id,
            node["id"],
        )
        await members[2].submit_recovery_share(
            recovery.share_document(carol, net.opt.ledger, set_id, node["id"], bad, int(time.time()))
        )

        def refused() -> dict[str, str] | None:
            r = _get(f"{net.gateway_url}/v1/recovery")[1].get("refused", {})
            return r if len(r) == 2 else None

        why = await _until(refused, "both refusals")
        assert why[user.key_id].startswith("not_share_holder") and why[carol.key_id].startswith("bad_share")
        try:
            await members[0].submit_recovery_share(b"not a COSE document")
            raise AssertionError("the gateway took a malformed document")
        except ClientError as e:
            assert e.status == 400 and e.code == "invalid_document"

        # Step 4: members submit their shares with the CLI.
        first = await asyncio.to_thread(_cli, net, "--as", "alice", "gov", "recovery-share")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout.splitlines()[-1])["accepted"] is True
        await _until(lambda: waiting(1), "waiting for shares (1 of 2)")
        again = await asyncio.to_thread(_cli, net, "--as", "alice", "gov", "recovery-share")
        assert again.returncode == 0  # a second copy changes nothing: still 1 of 2
        assert (await members[0].recovery())["received"] == [net.member_key(0).key_id]
        elsewhere = await asyncio.to_thread(_cli, net, "--as", "bob", "gov", "recovery-share", "--node", "ab" * 32)
        assert elsewhere.returncode == 2 and "not --node" in elsewhere.stderr
        second = await asyncio.to_thread(_cli, net, "--as", "bob", "gov", "recovery-share", "--node", node["id"])
        assert second.returncode == 0, second.stderr

        # Step 5: the service resumes with its whole history; the recovered node counts for commits
        # once its member (alice, who started it) endorsed it, and nothing commits while nodes of
        # fewer than k = 2 members can sign.
        await _until(lambda: _get(f"{net.gateway_url}/readyz")[0] == 200, "the gateway ready again", 120)
        for h, r in receipts.items():
            receipt.verify(r, ident, tx_hash=h)  # issued before the disaster: still valid
        await _until(lambda: _node(net, "recovery-0", "Trusted"), "the recovered node trusted", 60)
        endorsed = await asyncio.to_thread(_endorse, net, "alice", "recovery-0")
        assert endorsed.returncode == 0, endorsed.stderr
        assert json.loads(endorsed.stdout.splitlines()[-1])["status"] == "Executed"

        def unreachable(url: str) -> bool:
            code, body = _get(f"{url}/readyz")
            reason = str(body.get("reason", ""))
            return code == 503 and reason.startswith("quorum_unreachable: nodes of 1 member(s)")

        await _until(lambda: unreachable(f"http://127.0.0.1:{port}"), "quorum_unreachable at the recovered node", 60)
        metrics = await asyncio.to_thread(
            lambda: urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        assert "conclavium_executor_quorum_unreachable 1.0" in metrics
        reader = Client(net.gateway_url, user, **net.trust())
        try:
            for h in receipts:
                served = await reader.receipt(h)
                receipt.verify(served, ident, tx_hash=h)
            # Private data needs the transaction key, which nodes of k = 2 members must vouch for:
            # with one member's node alone the SDK seals nothing, not even a query.
            try:
                await reader.get("clinic", "p0")
                raise AssertionError("a transaction key vouched for by one member was taken")
            except ClientError as e:
                assert (e.code, e.reason) == ("untrusted_tx_key", "insufficient_vouches"), e
            assert await reader.get("public:notes", "n4") == 4
            h = await reader.put("public:notes", "n-new", "after-recovery")
            try:
                await reader.wait(h, timeout=5)
                raise AssertionError("a write committed with nodes of one member only")
            except TimeoutError:
                pass
            done = await reader.recovery()
            assert done["state"] == "running"
            assert sorted(done["last"]["members"]) == sorted([net.member_key(0).key_id, net.member_key(1).key_id])
            assert sorted(done["last"]["retired"]) == sorted(
                n["id"] for n in (await reader.service())["nodes"] if n["status"] == "Retired"
            )
            service = await reader.service()
            assert [n["name"] for n in service["nodes"] if n["status"] == "Trusted"] == ["recovery-0"]

            # Step 6: another member's executor joins the usual way (empty data directory), the
            # recovered node hands it the secrets, its member (bob) endorses it: the pending write commits.
            joiner = _executor(net, "joiner-1")
            recovering.append(joiner)
            joiner.start()
            await _until(lambda: _node(net, "joiner-1", "Trusted"), "the joiner trusted", 120)
            endorsed = await asyncio.to_thread(_endorse, net, "bob", "joiner-1")
            assert endorsed.returncode == 0, endorsed.stderr
            await _until(lambda: _get(f"http://127.0.0.1:{joiner.port}/readyz")[0] == 200, "the joiner ready", 120)
            await _until(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "the recovered node ready", 60)
            st = await reader.wait(h, timeout=90)
            assert st["status"] == "Committed" and st["verified"]
            assert st["receipt"]["height"] > 0
            assert receipt.verify(st["receipt"], ident, tx_hash=h).members == sorted(
                [net.member_key(0).key_id, net.member_key(1).key_id]
            )
            assert await reader.get("public:notes", "n-new") == "after-recovery"
            assert await reader.get("clinic", "p0") == "before-0"
            assert await reader.get("clinic", "p7") == "after-rotation-7"
            h = await reader.put("clinic", "p-joined", "two nodes")
            assert (await reader.wait(h, timeout=60))["status"] == "Committed"
            assert await reader.get("clinic", "p-joined") == "two nodes"
        finally:
            await reader.close()
        log = (net.dir / "logs" / "recovery-0.log").read_text()
        assert "reconstructed the ledger secrets (2 generation(s))" in log
    finally:
        for p in recovering:
            p.stop()
        for c in members:
            await c.close()
        await asyncio.to_thread(net.stop)
