"""Attestation service core: one request handler shared by HTTP and NATS, JWT signing, metrics.

The service is untrusted by design (executors re-verify evidence themselves). Its job in a
deployment is collateral: joining executors ask it (`POST /v1/attestation/collateral`) for the
collateral their evidence needs, fetched from the configured source and cached, and carry it in
their Join entry. `/v1/attestation/verify` is the operator's pre-check of a node's evidence against
a policy; its signed result says exactly what was checked and when.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conclavium.attestation import (
    PLATFORMS,
    AttestationError,
    PolicyError,
    evaluate_policy,
    load_policy,
    verify_evidence,
)
from conclavium.attestation.snp import leaf_product
from conclavium.crypto.keys import PrivateKey

from .collateral import SNP_PARTS, CollateralSource, CollateralUnavailable

log = logging.getLogger("conclavium.attestation")

MAX_BODY = 2 * 1024 * 1024
SUBJECT = "conclavium.attestation.verify"
COLLATERAL_PREFIX = "conclavium:attestation:collateral:"
COLLATERAL_TTL = 7 * 24 * 3600
TOKEN_TTL = 3600
JWT_ALGS = {"Ed25519": "EdDSA", "ES256": "ES256", "ES384": "ES384"}


class RequestError(Exception):
    """A request the service answers with an error document and HTTP status."""

    def __init__(self, status: int, code: str, message: str, check: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.check = status, code, message, check

    def to_dict(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.check:
            err["check"] = self.check
        return {"error": err}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: PrivateKey, payload: dict[str, Any]) -> str:
    """Compact JWS (RFC 7515/7519) with the service key; EdDSA for Ed25519, ES256/ES384 for ECDSA."""
    header = {"alg": JWT_ALGS[key.alg], "typ": "JWT", "kid": key.key_id}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    )
    return signing_input + "." + b64url(key.sign(signing_input.encode()))


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, "malformed_request", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, "malformed_request", f"{what} is not valid base64") from e


def _b64_map(value: Any, what: str) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(400, "malformed_request", f"{what} must be an object of name -> base64")
    return {str(k): _b64(v, f"{what}.{k}") for k, v in value.items()}


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _outcome(status: int) -> str:
    """verified (200), refused (422: not authentic or not acceptable), error (5xx: could not decide),
    malformed (other 4xx)."""
    if status == 422:
        return "refused"
    if status >= 500:
        return "error"
    return "malformed"


def _too_large() -> RequestError:
    return RequestError(413, "too_large", f"request body exceeds {MAX_BODY} bytes")


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise _too_large()
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "malformed_request", f"body is not JSON: {e}") from e
    if not isinstance(req, dict):
        raise RequestError(400, "malformed_request", "body must be a JSON object")
    return req


class CollateralCache:
    """Collateral by SHA-256 of its canonical form: Redis when configured, else a small LRU in memory."""

    def __init__(self, redis: Any | None = None, size: int = 256) -> None:
        self.redis = redis
        self.size = size
        self.local: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def digest(encoded: dict[str, str]) -> str:
        return hashlib.sha256(json.dumps(encoded, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    async def put(self, encoded: dict[str, str]) -> str:
        ref = self.digest(encoded)
        doc = json.dumps(encoded, sort_keys=True)
        if self.redis is not None:
            await self.redis.set(COLLATERAL_PREFIX + ref, doc, ex=COLLATERAL_TTL)
        else:
            self.local[ref] = doc
            self.local.move_to_end(ref)
            while len(self.local) > self.size:
                self.local.popitem(last=False)
        return ref

    async def get(self, ref: str) -> dict[str, str] | None:
        if self.redis is not None:
            doc = await self.redis.get(COLLATERAL_PREFIX + ref)
        else:
            doc = self.local.get(ref)
        return json.loads(doc) if doc else None


class AttestationService:
    """Verifies requests, signs results, counts outcomes."""

    def __init__(
        self,
        key: PrivateKey,
        cache: CollateralCache | None = None,
        issuer: str = "conclavium-attestation",
        source: CollateralSource | None = None,
    ):
        self.key = key
        self.issuer = issuer
        self.cache = cache or CollateralCache()
        self.source = source
        self.registry = CollectorRegistry()
        self.fetches = Counter(
            "conclavium_attestation_collateral_fetches_total",
            "Collateral lookups by source (pcs, kds) and outcome (fetched, cached, stale_cache, error)",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.crl_next_update = Gauge(
            "conclavium_attestation_crl_next_update_timestamp_seconds",
            "nextUpdate (Unix time) of the last CRL served, by source and CRL (root_ca, pck_platform, pck_processor,"
            " vcek_<product>, vlek_<product>); executors refuse joins once it has passed",
            ["source", "crl"],
            registry=self.registry,
        )
        self.crl_unreadable = Counter(
            "conclavium_attestation_crl_unreadable_total",
            "CRLs from the source that do not parse or carry no nextUpdate (executors will refuse them)",
            ["source", "crl"],
            registry=self.registry,
        )
        if source is not None:
            source.on_fetch = lambda src, outcome: self.fetches.labels(src, outcome).inc()
            source.on_crl = self._record_crl
        self.verifications = Counter(
            "conclavium_attestation_verifications_total",
            "Evidence verifications by platform and outcome",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "conclavium_attestation_verify_seconds",
            "Time to verify one piece of evidence",
            registry=self.registry,
        )
        self.nats: Any | None = None

    def _record_crl(self, source: str, name: str, data: bytes) -> None:
        """Expose when a served CRL goes stale; nothing is decided here (executors judge the CRL)."""
        try:
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
            next_update = crl.next_update_utc
        except ValueError:
            next_update = None
        if next_update is None:
            self.crl_unreadable.labels(source, name).inc()
            return
        self.crl_next_update.labels(source, name).set(next_update.timestamp())

    async def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request body; the (status, document) pair is the same for HTTP and NATS."""
        platform = "unknown"
        try:
            req = _json_object(body)
            platform = req.get("platform")
            if platform not in PLATFORMS:
                platform = "unknown"
                raise RequestError(400, "malformed_request", f"platform must be one of {list(PLATFORMS)}")
            status, result = await self._verify(platform, req)
            self.verifications.labels(platform, "verified" if status == 200 else "refused").inc()
            return status, result
        except RequestError as e:
            self.verifications.labels(platform, _outcome(e.status)).inc()
            return e.status, e.to_dict()
        except Exception:
            log.exception("verification failed unexpectedly")
            self.verifications.labels(platform, "error").inc()
            return 500, {"error": {"code": "internal_error", "message": "the verifier failed; see its log"}}

    async def collateral(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The collateral (SNP: VCEK and the ARK's CRL; TDX/SGX: TCB info, QE identity, chain, CRLs)."""
        platform = "unknown"
        try:
            req = _json_object(body)
            platform = req.get("platform")
            if platform not in ("snp", "tdx", "sgx"):
                platform = "unknown"
                raise RequestError(400, "malformed_request", "platform must be snp, tdx or sgx")
            evidence = _b64(req.get("evidence"), "evidence")
            product = req.get("product")
            if product is not None and product not in ("Milan", "Genoa", "Turin"):
                raise RequestError(400, "malformed_request", "product must be Milan, Genoa or Turin")
            parts = req.get("parts", list(SNP_PARTS))
            if platform == "snp" and (
                not isinstance(parts, list) or not parts or any(p not in SNP_PARTS for p in parts)
            ):
                raise RequestError(400, "malformed_request", f"parts must be a non-empty list among {list(SNP_PARTS)}")
            if self.source is None:
                raise RequestError(503, "collateral_source_unconfigured", "this service has no collateral source")
            try:
                if platform == "snp":
                    certs, files = await self.source.snp(evidence, product, tuple(parts))
                    doc = {"platform": platform}
                    if "certs" in parts:
                        doc["certs"] = {k: _b64e(v) for k, v in certs.items()}
                    if "crl" in parts:
                        doc["collateral"] = {k: _b64e(v) for k, v in files.items()}
                else:
                    files = await self.source.intel(platform, evidence)
                    doc = {"platform": platform, "collateral": {k: _b64e(v) for k, v in files.items()}}
            except CollateralUnavailable as e:
                status = 422 if e.code == "evidence_unreadable" else 503 if e.code.endswith("unconfigured") else 502
                raise RequestError(status, e.code, e.message) from e
            return 200, doc
        except RequestError as e:
            if e.status >= 500:
                self.verifications.labels(platform, "error").inc()
            return e.status, e.to_dict()
        except Exception:
            log.exception("collateral lookup failed unexpectedly")
            self.verifications.labels(platform, "error").inc()
            return 500, {"error": {"code": "internal_error", "message": "the collateral lookup failed; see its log"}}

    async def _verify(self, platform: str, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        evidence = _b64(req.get("evidence"), "evidence")
        certs = list(_b64_map(req.get("certs"), "certs").values())
        encoded = req.get("collateral")
        collateral_ref = None
        if encoded is None and req.get("collateral_ref"):
            encoded = await self.cache.get(str(req["collateral_ref"]))
            if encoded is None:
                raise RequestError(422, "collateral_unknown", "no cached collateral with that reference")
        collateral = _b64_map(encoded, "collateral")
        if not collateral and platform in ("tdx", "sgx") and self.source is not None:
            try:
                collateral = await self.source.intel(platform, evidence)
            except CollateralUnavailable as e:
                status = 422 if e.code == "evidence_unreadable" else 502
                raise RequestError(status, e.code, e.message) from e
            encoded = {k: _b64e(v) for k, v in collateral.items()}
        if platform == "snp" and self.source is not None and (not certs or (not collateral and self.source.kds_url)):
            # What the request lacks: the VCEK and/or the ARK's CRL (product from the given leaf).
            parts = tuple(p for p, have in (("certs", certs), ("crl", collateral)) if not have)
            named = leaf_product(certs) if certs else None
            try:
                fetched, files = await self.source.snp(evidence, named[0] if named else None, parts)
            except CollateralUnavailable as e:
                status = 422 if e.code == "evidence_unreadable" else 502
                raise RequestError(status, e.code, e.message) from e
            certs = certs or list(fetched.values())
            collateral = collateral or files
            encoded = {k: _b64e(v) for k, v in collateral.items()}
        if collateral:
            collateral_ref = await self.cache.put(encoded)  # type: ignore[arg-type]
        at = datetime.now(UTC)
        if req.get("at") is not None:
            try:
                at = datetime.fromisoformat(str(req["at"]).replace("Z", "+00:00"))
            except ValueError as e:
                raise RequestError(400, "malformed_request", "at must be an ISO 8601 time") from e
            if at.tzinfo is None:
                raise RequestError(400, "malformed_request", "at must carry a timezone")
        policy = None
        if req.get("policy") is not None:
            try:
                policy = load_policy(req["policy"])
            except PolicyError as e:
                raise RequestError(400, "invalid_policy", e.message, e.check) from e
        public_keys = [_b64(k, "public_keys[]") for k in req.get("public_keys") or []]
        event_log = _b64(req["event_log"], "event_log") if req.get("event_log") is not None else None
        start = time.perf_counter()
        try:
            claims = await asyncio.to_thread(
                verify_evidence,
                platform,
                evidence,
                certs=certs,
                collateral=collateral,
                event_log=event_log,
                at=at,
                policy=policy,
            )
        except AttestationError as e:
            raise RequestError(422, "evidence_refused", e.message, e.check) from e
        finally:
            self.latency.observe(time.perf_counter() - start)
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "iat": now,
            "exp": now + TOKEN_TTL,
            "verified_at": claims.verified_at,
            "evidence_sha256": hashlib.sha256(evidence).hexdigest(),
            "platform": claims.platform,
            "claims": claims.to_dict(),
        }
        response: dict[str, Any] = {"claims": claims.to_dict()}
        if collateral_ref:
            response["collateral_ref"] = collateral_ref
        if policy is not None:
            decision = evaluate_policy(claims, policy, public_keys=public_keys or None, at=at)
            payload["policy"] = response["policy"] = decision.to_dict()
            if not decision.allowed:
                # Authentic but refused: not "verified", and no token vouching for it.
                check, message = decision.failures[0]
                err = RequestError(422, "policy_refused", message, check).to_dict()
                return 422, {**err, **response}
        response["token"] = sign_jwt(self.key, payload)
        response["key_id"] = self.key.key_id
        return 200, response


def create_app(service: AttestationService, ready: Any = None) -> web.Application:
    """aiohttp application; `ready` is an async callable telling whether dependencies are up."""
    app = web.Application(client_max_size=MAX_BODY + 1)

    async def verify(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            err = _too_large()
            service.verifications.labels("unknown", "malformed").inc()
            return web.json_response(err.to_dict(), status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            err = _too_large()
            return web.json_response(err.to_dict(), status=413)
        status, doc = await service.handle(body)
        return web.json_response(doc, status=status)

    async def collateral(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            err = _too_large()
            return web.json_response(err.to_dict(), status=413)
        status, doc = await service.collateral(body)
        return web.json_response(doc, status=status)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = True if ready is None else await ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(service.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def key(_: web.Request) -> web.Response:
        pub = service.key.public_key
        return web.json_response({"key_id": pub.key_id, "alg": JWT_ALGS[pub.alg], "pem": pub.pem})

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "not_found", "message": request.path}}, status=404)

    app.router.add_post("/v1/attestation/verify", verify)
    app.router.add_post("/v1/attestation/collateral", collateral)
    app.router.add_get("/v1/attestation/key", key)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def nats_handler(service: AttestationService, msg: Any) -> None:
    """NATS request/reply: the same JSON as HTTP, plus the HTTP-like status in the reply."""
    status, doc = await service.handle(msg.data)
    doc["status"] = status
    if msg.reply:
        await msg.respond(json.dumps(doc).encode())
