"""The user's path without a cluster: docs/kubernetes.md's walk-through, run literally by bash.

kmock is the API server; `kubectl` and `helm` on the script's PATH act on it (kubectl.py: `helm
install` is the real `helm template` applied to kmock); the test kubelet (kubelet.py) runs every pod
of every Deployment and StatefulSet in kmock as a local process of our services: the chart's
operator (kopf, logged in to kmock), gateway and attestation service, and the executors and
sequencers the operator creates, against real NATS and a real password-protected Redis. Nothing is
started by the test that the walk-through and the manifests do not ask for.

Afterwards: the status every kind shows (`kubectl get conclavium`), the genesis created once (an
operator restart changes nothing), the `/metrics` of every pod the chart and the operator made, and
the chart's alert rules evaluated on those metrics with promtool: silent on this healthy ledger.
Budget: about 2-4 minutes on a quiet 2-core machine (marker `slow`)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from aiohttp import web
from kubectl import Commands, shell_block
from kubelet import Kubelet
from operator_harness import RVEmulator, load_resources

from conclavium.local.processes import Process, find_binary, free_port, nats_process

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kubernetes.md"
ALERTS = ROOT / "helm" / "conclavium" / "files" / "alerts.yaml"
NS = "ledger"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        str(ROOT / ".tools" / "bin" / name) if (ROOT / ".tools" / "bin" / name).exists() else None
    )
    if path is None:
        pytest.skip(f"{name} is not installed: run `bash scripts/install-tools.sh`")
    return path


def _redis(directory: Path, password: str) -> Process:
    binary = find_binary("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--requirepass", password]
    directory.mkdir(parents=True, exist_ok=True)
    return Process("redis", argv, directory / "redis.log", port=port)


async def _run_walkthrough(
    script: str, work: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[tuple[float, str]]]:
    """The block under `bash -ex`, each command's start time stamped by PS4."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-x",
        "-c",
        "PS4='+ @$(date +%s.%N) '\n" + script,
        cwd=str(work),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    result = subprocess.CompletedProcess(["bash"], proc.returncode or 0, out.decode(), err.decode())
    trace = [(float(m.group(1)), m.group(2)) for m in re.finditer(r"^\+{1,2} @(\d+\.\d+) (.*)$", result.stderr, re.M)]
    return result, trace


async def test_helm_install_and_declared_members_make_a_working_ledger(api: Any, tmp_path: Path) -> None:
    helm = _tool("helm")
    promtool = _tool("promtool")
    nats = nats_process(tmp_path / "nats", tmp_path / "logs")
    password = secrets.token_hex(12)
    redis = _redis(tmp_path / "redis", password)
    for p in (nats, redis):
        p.start()
        p.wait_ready()
    kubelet = Kubelet(api, NS, tmp_path / "cluster", Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin")
    if not (kubelet.bin_dir / "conclavium-executor").exists():
        kubelet.bin_dir = ROOT / ".venv" / "bin"
    commands = Commands(kubelet, helm)
    control = web.Application()
    control.router.add_post("/run", commands.handle)
    runner = web.AppRunner(control)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    work = tmp_path / "work"
    work.mkdir()
    for name in ("helm", "examples"):
        (work / name).symlink_to(ROOT / name)
    commands.install(work / ".bin", f"http://127.0.0.1:{port}/run")
    env = {
        "PATH": f"{work / '.bin'}:{kubelet.bin_dir}:{os.environ['PATH']}",
        "HOME": str(work),
        "NATS_URL": f"nats://127.0.0.1:{nats.port}",
        "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "REDIS_PASSWORD": password,
    }
    await kubelet.start()
    try:
        result, trace = await _run_walkthrough(
            shell_block(DOC.read_text(), "## Walk-through: a development consortium"), work, env
        )
        logs = "\n".join(f"--- {p.name}\n" + p.log.read_text()[-3000:] for p in kubelet.pods.values() if p.log.exists())
        assert result.returncode == 0, f"walk-through failed:\n{result.stderr[-6000:]}\n{logs[-20000:]}"
        _report_timing(trace)
        await _check_status(commands, result.stdout)
        upgrade, _ = await _run_walkthrough(
            shell_block(DOC.read_text(), "## Walk-through: upgrading the chart and its CRDs"), work, env
        )
        assert upgrade.returncode == 0, f"upgrade walk-through failed:\n{upgrade.stderr[-6000:]}"
        _check_crds(commands)
        await _check_status(commands, upgrade.stdout)
        old = _status(commands, "ConsortiumNode", "gamma-executor-0")
        replace, _ = await _run_walkthrough(
            shell_block(DOC.read_text(), "## Walk-through: replacing a node"), work, env
        )
        assert replace.returncode == 0, f"node replacement walk-through failed:\n{replace.stderr[-6000:]}"
        await _check_replaced(commands, kubelet, old)
        await _check_genesis_once(commands, kubelet, env)
        await _check_scaling(commands, kubelet)
        samples = await _scrape_every_pod(kubelet)
        _alerts_silent(promtool, samples, tmp_path)
        env["EAST_REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/1"
        await _second_cluster(commands, kubelet, work, env, tmp_path)
    finally:
        await kubelet.stop()
        await runner.cleanup()
        redis.stop()
        nats.stop()


def _check_crds(commands: Commands) -> None:
    """The stored CRDs are the chart's files (what `kubectl apply -f crds/` sent), and `helm upgrade`
    left the operator's Deployment as the install made it (--reuse-values: the same values)."""
    for path in sorted((ROOT / "helm" / "conclavium" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        stored = commands.stored("CustomResourceDefinition", "", crd["metadata"]["name"])
        assert stored is not None and stored["spec"] == crd["spec"], path.name
    operator = commands.stored("Deployment", NS, "conclavium-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}  # type: ignore[index]
    assert env["CONCLAVIUM_OPERATOR_POLL_INTERVAL"] == "2" and env["CONCLAVIUM_LEDGER"] == "dev-ledger", env


async def _check_replaced(commands: Commands, kubelet: Kubelet, old: dict[str, Any]) -> None:
    """gamma-executor-0 is a new node (another node id and claim, trusted), the old one is Retired in
    the ledger, its claim kept; the cluster's status converges as after the install."""
    new = _status(commands, "ConsortiumNode", "gamma-executor-0")
    assert new["nodeId"] != old["nodeId"] and new["claimName"] != old["claimName"], (old, new)
    ledger = {n["id"]: n["status"] for n in (await _service(kubelet.service_url("conclavium-gateway")))["nodes"]}
    assert (ledger[old["nodeId"]], ledger[new["nodeId"]]) == ("Retired", "Trusted"), ledger
    assert commands.stored("PersistentVolumeClaim", NS, old["claimName"]) is not None, "the old claim is kept"
    await _check_status(commands, "consortium.conclavium.io/dev Trusted")


async def _second_cluster(
    commands: Commands, kubelet: Kubelet, work: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """The walk-through of a second cluster (context `east`: its own kmock and kubelet, the same NATS):
    delta's External member there gets its executor once the members voted delta in; the first
    cluster has no node of delta's, and the ledger trusts `delta-east-executor-0`."""
    async with RVEmulator() as east_api, kmock.Server(east_api):
        load_resources(east_api)
        east = Kubelet(east_api, NS, tmp_path / "east", kubelet.bin_dir)
        east_commands = Commands(east, commands.helm)
        commands.contexts["east"] = east_commands
        await east.start()
        try:
            result, _ = await _run_walkthrough(
                shell_block(DOC.read_text(), "## Walk-through: a second cluster joins"), work, env
            )
            logs = "\n".join(
                f"--- {p.name}\n" + p.log.read_text()[-3000:] for p in east.pods.values() if p.log.exists()
            )
            assert result.returncode == 0, (
                f"second cluster walk-through failed:\n{result.stderr[-6000:]}\n{logs[-12000:]}"
            )
            member = _status(east_commands, "ConsortiumMember", "delta")
            assert _cond(member, "Admitted").get("status") == "True", member
            node = _status(east_commands, "ConsortiumNode", "delta-east-executor-0")
            assert node.get("phase") == "Trusted", node
            assert not [k for k in commands.api.objects if str(k[2]).startswith("delta")], (
                "no delta object in cluster one"
            )
            ledger = await _service(kubelet.service_url("conclavium-gateway"))
            assert {n["name"]: n["status"] for n in ledger["nodes"]}.get("delta-east-executor-0") == "Trusted"
            assert len(ledger["members"]) == 4
        finally:
            await east.stop()


def _report_timing(trace: list[tuple[float, str]]) -> None:
    """Seconds from `helm install` to the first committed transaction (the open_service proposal,
    recorded once `gov propose` returns) and to the user's transaction (`tx put --wait` returns)."""
    start = next(t for t, cmd in trace if cmd.startswith("helm install"))
    after = [t for t, cmd in trace if cmd.startswith("conclavium --gateway") and "gov vote" in cmd]
    tx_done = next(t for t, cmd in trace if cmd.startswith("conclavium --gateway") and "receipt get" in cmd)
    print(f"\nhelm install → first committed transaction (open_service proposal): {after[0] - start:.1f} s")
    print(f"helm install → the walk-through's transaction committed: {tx_done - start:.1f} s")


def _status(commands: Commands, kind: str, name: str) -> dict[str, Any]:
    obj = commands.stored(kind, NS, name)
    assert obj is not None, f"{kind} {name} missing"
    return dict(obj.get("status") or {})


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


async def _eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {what}") from None
        await asyncio.sleep(0.5)


async def _check_status(commands: Commands, table: str) -> None:
    """What `kubectl get conclavium` shows is what happens in the ledger and the pods."""

    def converged() -> None:
        cons = _status(commands, "Consortium", "dev")
        assert cons.get("phase") == "Ready", cons
        assert (cons["admittedMembers"], cons["trustedExecutors"], cons["commitQuorum"]) == (3, 3, 2), cons
        assert _cond(cons, "LedgerMatches").get("status") == "True", cons
        assert _cond(cons, "GenesisComplete").get("status") == "True", cons
        for member in ("alpha", "beta", "gamma"):
            st = _status(commands, "ConsortiumMember", member)
            assert st.get("phase") == "Ready", (member, st)
            assert _cond(st, "Admitted").get("reason") in ("AlreadyMember", "ProposalAccepted"), st
        heights = []
        for member in ("alpha", "beta", "gamma"):
            st = _status(commands, "ConsortiumNode", f"{member}-executor-0")
            assert st.get("phase") == "Trusted", (member, st)
            assert st["executedHeight"] >= st["committedHeight"] > 0, st
            heights.append(st["committedHeight"])
        phases = sorted(_status(commands, "ConsortiumNode", f"{m}-sequencer-0").get("phase") for m in ("alpha", "beta"))
        assert phases == ["Active", "Standby"], phases

    await _eventually(converged, 60, "status converged")
    assert "consortium.conclavium.io/dev" in table and "Trusted" in table, table


async def _check_genesis_once(commands: Commands, kubelet: Kubelet, env: dict[str, str]) -> None:
    """Restarting the operator (its pod's process killed; the kubelet restarts it) writes no second
    genesis: the ConfigMap and the service certificate stay, and only alpha's executor has --genesis."""
    configmap = commands.stored("ConfigMap", NS, "dev-genesis")
    assert configmap is not None
    gateway = kubelet.service_url("conclavium-gateway")
    cert = (await _service(gateway))["service_cert"]
    (operator,) = [p for p in kubelet.pods.values() if p.name.startswith("conclavium-operator")]
    assert operator.process is not None
    operator.process.kill()
    await _eventually(lambda: _assert(operator.restarts >= 1 and operator.ready), 60, "operator restarted")
    await asyncio.sleep(6)  # a few of the operator's passes (poll interval 2 s)
    assert commands.stored("ConfigMap", NS, "dev-genesis")["data"] == configmap["data"]  # type: ignore[index]
    assert (await _service(gateway))["service_cert"] == cert
    with_genesis = [
        p.name
        for p in kubelet.pods.values()
        if "--genesis" in (p.template["spec"]["containers"][0].get("command") or [])
    ]
    assert with_genesis == ["alpha-executor-0-0"], with_genesis


async def _service(gateway: str) -> dict[str, Any]:
    """GET /v1/service through the gateway Service, retried as a client would: while the gateway pod
    is not ready (a busy machine), the Service has no endpoint and refuses the connection."""
    deadline = time.monotonic() + 60
    while True:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{gateway}/v1/service") as r:
                if r.status == 200:
                    return dict(await r.json())
        except (aiohttp.ClientError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "the gateway Service did not answer /v1/service"
        await asyncio.sleep(1)


def _assert(value: bool) -> bool:
    assert value
    return value


async def _check_scaling(commands: Commands, kubelet: Kubelet) -> None:
    """Scaling a workload in kmock starts and stops its processes."""
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/conclavium-gateway"
    await kubelet.api.patch(path, json={"spec": {"replicas": 2}})
    await _eventually(
        lambda: _assert("conclavium-gateway-1" in kubelet.pods and kubelet.pods["conclavium-gateway-1"].ready),
        60,
        "second gateway",
    )
    second = kubelet.pods["conclavium-gateway-1"].process
    await kubelet.api.patch(path, json={"spec": {"replicas": 1}})
    assert second is not None
    await _eventually(
        lambda: _assert("conclavium-gateway-1" not in kubelet.pods and second.returncode is not None),
        30,
        "gateway scaled down and its process stopped",
    )


async def _scrape_every_pod(kubelet: Kubelet) -> dict[str, str]:
    """`/metrics` of every pod the chart and the operator created, by pod name."""
    texts: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for pod in kubelet.pods.values():
            port = pod.ports.get("metrics") or pod.ports.get("http")
            assert port, f"{pod.name} exposes no metrics port"
            for attempt in range(3):
                try:
                    async with http.get(f"http://{pod.ip}:{port}/metrics") as r:
                        assert r.status == 200, pod.name
                        texts[pod.name] = await r.text()
                        break
                except (aiohttp.ClientError, TimeoutError) as e:
                    if attempt == 2:
                        raise AssertionError(f"{pod.name} at {pod.ip}:{port}: /metrics {e!r}") from e
    components = {p.labels.get("app.kubernetes.io/component") for p in kubelet.pods.values()}
    assert components >= {"gateway", "attestation", "operator", "executor", "sequencer"}, components
    return texts


def _alerts_silent(promtool: str, samples: dict[str, str], tmp_path: Path) -> None:
    """The chart's alert rules over 30 minutes of the scraped values (held constant): none fires."""
    series = []
    line_re = re.compile(r"^(conclavium_[a-z0-9_]+)(\{[^}]*\})? (\S+)$")
    for pod, text in samples.items():
        for line in text.splitlines():
            m = line_re.match(line)
            if not m or m.group(3) in ("NaN", "+Inf", "-Inf"):
                continue
            labels = m.group(2)[1:-1] if m.group(2) else ""
            labels = ",".join(x for x in (labels, f'namespace="{NS}"', f'pod="{pod}"') if x)
            series.append({"series": f"{m.group(1)}{{{labels}}}", "values": f"{float(m.group(3)):g}x30"})
    names = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "30m", "alertname": n, "exp_alerts": []} for n in names],
            }
        ],
    }
    path = tmp_path / "scraped_test.yaml"
    path.write_text(yaml.safe_dump(test))
    signing = [s for s in series if s["series"].startswith("conclavium_executor_signing_nodes")]
    gauges = [
        s for s in series if re.match(r"conclavium_executor_(trusted_nodes|quorum|committed_height)\{", s["series"])
    ]
    assert signing and all(s["values"] == "3x30" for s in signing), (signing, gauges)
    run = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
