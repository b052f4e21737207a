"""kopf registrations (loaded by `kopf run -m conclavium_operator.handlers`); the logic is elsewhere.

`register()` fills any registry, so tests run the same handlers in their own OperatorRegistry; at
import it fills kopf's default registry for `kopf run`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import kopf

from conclavium_operator import (
    API_VERSION,
    metrics,
    reconcile_consortium,
    reconcile_member,
    reconcile_node,
    signed_documents,
)
from conclavium_operator import settings as operator_settings
from conclavium_operator.conditions import upsert
from conclavium_operator.config import OperatorConfig
from conclavium_operator.errors import Waiting, WaitingIsNotAFailure
from conclavium_operator.gateway import Gateway, GatewayUnavailable
from conclavium_operator.kube import Kube, KubeError
from conclavium_operator.runtime import Runtime, runtime

GROUP, VERSION = API_VERSION.split("/")
Credentials = Callable[..., kopf.ConnectionInfo | None]


def default_credentials(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster ServiceAccount first, then a kubeconfig (running the operator from a workstation)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def register(
    registry: kopf.OperatorRegistry, cfg: OperatorConfig | None = None, credentials: Credentials = default_credentials
) -> None:
    config = cfg or OperatorConfig.from_env()
    res = {"group": GROUP, "version": VERSION, "registry": registry}

    @kopf.on.startup(id="configure", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        operator_settings.configure(settings)
        objects_log = logging.getLogger("kopf.objects")
        if not any(isinstance(f, WaitingIsNotAFailure) for f in objects_log.filters):
            objects_log.addFilter(WaitingIsNotAFailure())
        memo.conclavium = Runtime(
            cfg=config, gateway=Gateway(config.gateway_url, cache_s=min(1.0, config.poll_interval / 2))
        )
        if metrics.start(config.metrics_port, host=config.metrics_host):
            logger.info("metrics on :%d/metrics", config.metrics_port)

    @kopf.on.login(id="login", registry=registry)
    def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo:
        info = credentials(**kwargs)
        if info is None:
            raise kopf.LoginError("no in-cluster ServiceAccount and no kubeconfig")
        current = getattr(memo, "kube", None)
        if current is None or current.server != info.server.rstrip("/") or current.token != info.token:
            memo.kube = Kube(info, timeout=config.request_timeout)
        return info

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        rt = getattr(memo, "conclavium", None)
        if rt is not None:
            await rt.gateway.close()
        kube = getattr(memo, "kube", None)
        if kube is not None:
            await kube.close()

    def rt_of(memo: kopf.Memo) -> Runtime:
        rt = runtime(memo)
        rt.kube = getattr(memo, "kube", None)  # the latest login's client (kopf logs in again on 401)
        return rt

    # --- Consortium -------------------------------------------------------------------------------

    @kopf.on.resume(plural="consortiums", id="consortium-resume", **res)
    @kopf.on.create(plural="consortiums", id="consortium-create", **res)
    @kopf.on.update(plural="consortiums", id="consortium-update", **res)
    @metrics.counted("Consortium")
    async def consortium(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        rt = rt_of(memo)
        if rt.cfg.node_pdb:
            try:
                await reconcile_consortium.ensure_budgets(rt.k8s, _raw(body))
            except KubeError as e:
                raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e
        fields, conds = await reconcile_consortium.observe(dict(body.get("spec") or {}), rt.gateway, rt.cfg.ledger)
        patch.status["observedGeneration"] = int(body.metadata.get("generation") or 0)
        patch.status.update(fields)
        upsert(patch, *conds)

    # --- ConsortiumMember -------------------------------------------------------------------------

    async def member_pass(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any) -> None:
        rt = rt_of(memo)
        async with rt.lock(body.metadata.uid or body.metadata.name):
            try:
                await reconcile_member.reconcile(rt, _raw(body), patch, logger)
            except KubeError as e:
                raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e

    @kopf.on.resume(plural="consortiummembers", id="member-resume", **res)
    @kopf.on.create(plural="consortiummembers", id="member-create", **res)
    @kopf.on.update(plural="consortiummembers", id="member-update", **res)
    @metrics.counted("ConsortiumMember")
    async def member(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await member_pass(body, patch, memo, logger)

    @kopf.timer(
        plural="consortiummembers",
        id="member-sync",
        interval=config.poll_interval,
        initial_delay=config.poll_interval,
        **res,
    )
    @metrics.counted("ConsortiumMember")
    async def member_sync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await member_pass(body, patch, memo, logger)

    @kopf.on.delete(plural="consortiummembers", id="member-removal", **res)
    @metrics.counted("ConsortiumMember")
    async def member_removal(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        rt = rt_of(memo)
        async with rt.lock(body.metadata.uid or body.metadata.name):
            await reconcile_member.remove(rt, _raw(body), patch, logger)

    # --- ConsortiumNode (operator-owned; the delete handler is its finalizer) --------------------------

    @kopf.on.resume(plural="consortiumnodes", id="node-resume", **res)
    @kopf.on.create(plural="consortiumnodes", id="node-create", **res)
    @kopf.on.update(plural="consortiumnodes", id="node-update", **res)
    @metrics.counted("ConsortiumNode")
    async def node(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        rt = rt_of(memo)
        try:
            patch.status.update(await reconcile_node.ensure_children(rt.k8s, rt.cfg, _raw(body)))
        except KubeError as e:
            raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e
        patch.status["observedGeneration"] = int(body.metadata.get("generation") or 0)
        upsert(
            patch, reconcile_node.Condition("Provisioned", "True", "ChildrenCreated", "StatefulSet, Service and PVC")
        )

    @kopf.on.delete(plural="consortiumnodes", id="node-retirement", **res)
    @metrics.counted("ConsortiumNode")
    async def node_retirement(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        """The finalizer: however a node is deleted (kubectl, Argo CD, a foreground cascade), an executor
        the ledger trusts goes only after a `retire_node` vote, so its keys and ledger copy stay meanwhile."""
        rt = rt_of(memo)
        if reconcile_member.ORPHAN_ANNOTATION in (body.metadata.annotations or {}):
            logger.info(
                "node %s released without retire_node (its member's deletionPolicy is Orphan)", body.metadata.name
            )
            return
        # The member's lock: its timer may be retiring the same node (scale-down, removal) right now.
        owners = [
            r.get("uid") for r in body.metadata.get("ownerReferences") or [] if r.get("kind") == "ConsortiumMember"
        ]
        async with rt.lock(owners[0] if owners else body.metadata.name):
            try:
                waiting = await reconcile_member.retire_next(rt, [_raw(body)], logger)
            except GatewayUnavailable as e:
                raise kopf.TemporaryError(str(e), delay=rt.cfg.retry_delay) from e
            except KubeError as e:
                raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e
        if waiting:
            raise Waiting(f"waiting for {waiting}", delay=rt.cfg.poll_interval)

    # --- governance documents members signed offline (ConfigMaps labelled with their Consortium) ----

    @kopf.on.resume("", "v1", "configmaps", id="document-resume", registry=registry, **_document_filter())
    @kopf.on.create("", "v1", "configmaps", id="document-create", registry=registry, **_document_filter())
    @kopf.on.update("", "v1", "configmaps", id="document-update", registry=registry, **_document_filter())
    @metrics.counted("GovernanceDocument")
    async def document(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        rt = rt_of(memo)
        try:
            await signed_documents.forward(rt, _raw(body), patch, logger)
        except KubeError as e:
            raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e


def _document_filter() -> dict[str, Any]:
    return {"labels": {signed_documents.DOCUMENT_LABEL: kopf.PRESENT}}


def _raw(body: kopf.Body) -> dict[str, Any]:
    """A plain, detached copy of kopf's live body view."""
    return copy.deepcopy(dict(body))


register(kopf.get_default_registry())
