"""Collateral for joining nodes, fetched from a configured source and cached.

A joining executor sends its evidence; the service works out which collateral that evidence needs
and returns it, fetched from the configured source (Intel PCS v4 API or a PCCS / Azure THIM-style
mirror of it, AMD KDS or a mirror of it) and cached in Redis (or memory). The executor attaches the
result to its ordered Join entry, and every executor verifies it there, by signature, against the
block's time. Nothing here is trusted: a wrong or stale document only gets the join refused.

Intel (TDX, SGX), for the FMSPC and PCK CA type read from the quote's PCK certificate:
`{pcs}/{tdx|sgx}/certification/v4/tcb?fmspc=` (TCB info, signing chain in `TCB-Info-Issuer-Chain`),
`{pcs}/{tdx|sgx}/certification/v4/qe/identity`, `{pcs}/sgx/certification/v4/pckcrl?ca=&encoding=der`,
`{pcs}/sgx/certification/v4/rootcacrl`. AMD: `{kds}/vcek/v1/{product}/{hwid}?blSPL=&teeSPL=&snpSPL=&ucodeSPL=`
(Turin also `fmcSPL`, hwID is the first 8 bytes of CHIP_ID) and the ARK's CRL,
`{kds}/{vcek|vlek}/v1/{product}/crl`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, unquote

import aiohttp

from conclavium.attestation import VerificationError
from conclavium.attestation._x509 import cn, load_certs
from conclavium.attestation.intel_quote import parse_quote, pck_info
from conclavium.attestation.snp import CPUID_PRODUCTS, HCL_MAGIC, REPORT_SIZE, decode_tcb, parse_report

SNP_PARTS = ("certs", "crl")

FETCH_PREFIX = "conclavium:attestation:fetch:"
FETCH_TIMEOUT = 10.0


class CollateralUnavailable(Exception):
    """The source could not provide the collateral and no cached copy exists."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FetchCache:
    """Fetched documents by URL: Redis when configured, else an in-memory LRU.

    A copy younger than `refresh` seconds is served without asking the source; an older one is
    refreshed, and served anyway when the source fails (its freshness is judged by the executors).
    """

    def __init__(self, redis: Any | None = None, refresh: float = 3600.0, keep: int = 7 * 24 * 3600) -> None:
        self.redis, self.refresh, self.keep = redis, refresh, keep
        self.local: OrderedDict[str, str] = OrderedDict()

    async def get(self, url: str) -> dict[str, Any] | None:
        key = FETCH_PREFIX + hashlib.sha256(url.encode()).hexdigest()
        raw = await self.redis.get(key) if self.redis is not None else self.local.get(key)
        return json.loads(raw) if raw else None

    async def put(self, url: str, doc: dict[str, Any]) -> None:
        key = FETCH_PREFIX + hashlib.sha256(url.encode()).hexdigest()
        raw = json.dumps(doc)
        if self.redis is not None:
            await self.redis.set(key, raw, ex=self.keep)
        else:
            self.local[key] = raw
            self.local.move_to_end(key)
            while len(self.local) > 512:
                self.local.popitem(last=False)


class CollateralSource:
    """Fetches and caches the collateral a piece of evidence needs."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        cache: FetchCache,
        *,
        pcs_url: str | None = None,
        kds_url: str | None = None,
        on_fetch: Any = None,
        on_crl: Any = None,
    ) -> None:
        self.http, self.cache = http, cache
        self.pcs_url = pcs_url.rstrip("/") if pcs_url else None
        self.kds_url = kds_url.rstrip("/") if kds_url else None
        self.on_fetch = on_fetch or (lambda source, outcome: None)
        self.on_crl = on_crl or (lambda source, crl, data: None)

    async def _fetch(self, source: str, url: str, header: str | None = None) -> tuple[bytes, str | None]:
        cached = await self.cache.get(url)
        if cached is not None and time.time() - cached["fetched_at"] < self.cache.refresh:
            self.on_fetch(source, "cached")
            return base64.b64decode(cached["body"]), cached.get("header")
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as r:
                if r.status != 200:
                    raise CollateralUnavailable("collateral_unavailable", f"{source} answered {r.status} for {url}")
                body = await r.read()
                value = r.headers.get(header) if header else None
        except (aiohttp.ClientError, TimeoutError, CollateralUnavailable) as e:
            if cached is not None:
                self.on_fetch(source, "stale_cache")
                return base64.b64decode(cached["body"]), cached.get("header")
            self.on_fetch(source, "error")
            if isinstance(e, CollateralUnavailable):
                raise
            raise CollateralUnavailable("collateral_unavailable", f"{source} unreachable for {url}: {e}") from e
        await self.cache.put(url, {"fetched_at": time.time(), "body": base64.b64encode(body).decode(), "header": value})
        self.on_fetch(source, "fetched")
        return body, value

    async def intel(self, platform: str, evidence: bytes) -> dict[str, bytes]:
        """TCB info, QE identity, TCB signing chain and both CRLs for a TDX or SGX quote."""
        if self.pcs_url is None:
            raise CollateralUnavailable("collateral_source_unconfigured", "no Intel collateral source (--pcs-url)")
        try:
            q = parse_quote(evidence)
            certs = load_certs(q.pck_chain_pem, "header_and_cert_type")
            leaf, inter = certs[0], certs[1]
            fmspc = pck_info(leaf).fmspc.hex()
        except (VerificationError, IndexError) as e:
            raise CollateralUnavailable("evidence_unreadable", f"cannot read the quote's PCK certificate: {e}") from e
        if q.is_tdx != (platform == "tdx"):
            raise CollateralUnavailable("evidence_unreadable", f"the quote is not a {platform} quote")
        ca = "processor" if "Processor" in cn(inter.subject) else "platform"
        base = self.pcs_url
        tcb, chain = await self._fetch(
            "pcs", f"{base}/{platform}/certification/v4/tcb?fmspc={fmspc}", "TCB-Info-Issuer-Chain"
        )
        qe, _ = await self._fetch("pcs", f"{base}/{platform}/certification/v4/qe/identity")
        pck_crl, _ = await self._fetch("pcs", f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der")
        root_crl, _ = await self._fetch("pcs", f"{base}/sgx/certification/v4/rootcacrl")
        if not chain:
            raise CollateralUnavailable("collateral_unavailable", "the source sent TCB info without its issuer chain")
        pck_crl, root_crl = _crl_bytes(pck_crl), _crl_bytes(root_crl)
        self.on_crl("pcs", f"pck_{ca}", pck_crl)
        self.on_crl("pcs", "root_ca", root_crl)
        return {
            "tcb_info.json": tcb,
            "qe_identity.json": qe,
            "tcb_signing_chain.pem": unquote(chain).encode(),
            "pck_crl.der": pck_crl,
            "root_ca_crl.der": root_crl,
        }

    async def snp(
        self, evidence: bytes, product: str | None = None, parts: tuple[str, ...] = SNP_PARTS
    ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(certs, collateral) for an SNP report: the VCEK from AMD KDS (`certs` part; a VLEK cannot
        be fetched, the host must supply it) and the ARK's CRL for the report's key type (`crl` part)."""
        if self.kds_url is None:
            raise CollateralUnavailable("collateral_source_unconfigured", "no AMD collateral source (--kds-url)")
        raw = evidence[0x20 : 0x20 + REPORT_SIZE] if evidence[:4] == HCL_MAGIC else evidence
        try:
            report = parse_report(raw)
        except VerificationError as e:
            raise CollateralUnavailable("evidence_unreadable", str(e)) from e
        kind = {0: "vcek", 1: "vlek"}.get(report.signing_key)
        if kind is None:
            raise CollateralUnavailable("evidence_unreadable", "the report names no VCEK or VLEK signing key")
        known = product or CPUID_PRODUCTS.get(report.cpuid[:2])
        certs: dict[str, bytes] = {}
        if "certs" in parts:
            certs, known = await self._vcek(report, kind, [known] if known else ["Milan", "Genoa", "Turin"])
        collateral: dict[str, bytes] = {}
        if "crl" in parts:
            if known is None:
                raise CollateralUnavailable(
                    "evidence_unreadable", "the report does not name its product (v2); give the product for its CRL"
                )
            crl, _ = await self._fetch("kds", f"{self.kds_url}/{kind}/v1/{known}/crl")
            crl = _crl_bytes(crl)
            self.on_crl("kds", f"{kind}_{known}", crl)
            collateral["amd_crl.der"] = crl
        return certs, collateral

    async def _vcek(self, report: Any, kind: str, products: list[str]) -> tuple[dict[str, bytes], str]:
        if kind != "vcek":
            raise CollateralUnavailable("evidence_unreadable", "the report is VLEK-signed; KDS serves VCEKs only")
        if not any(report.chip_id):
            raise CollateralUnavailable("evidence_unreadable", "CHIP_ID is masked; the VCEK cannot be looked up")
        last: CollateralUnavailable | None = None
        for name in products:
            tcb = decode_tcb(report.reported_tcb, name)
            hwid = (report.chip_id[:8] if name == "Turin" else report.chip_id).hex()
            params = f"blSPL={tcb['bootloader']}&teeSPL={tcb['tee']}&snpSPL={tcb['snp']}&ucodeSPL={tcb['microcode']}"
            if name == "Turin":
                params += f"&fmcSPL={tcb['fmc']}"
            try:
                vcek, _ = await self._fetch("kds", f"{self.kds_url}/vcek/v1/{name}/{hwid}?{params}")
            except CollateralUnavailable as e:
                last = e
                continue
            return {"vcek.der": vcek}, name
        assert last is not None
        raise last


def _crl_bytes(data: bytes) -> bytes:
    """PCS serves CRLs as DER, PEM or (older API versions) hex-encoded DER."""
    stripped = data.strip()
    if stripped[:1] in b"0123456789abcdefABCDEF" and not stripped.startswith(b"-----"):
        try:
            return binascii.unhexlify(stripped)
        except (binascii.Error, ValueError):
            pass
    return data


def encode_chain_header(pem: bytes) -> str:
    """How PCS sends an issuer chain in a header (URL-encoded PEM); used by mirrors and tests."""
    return quote(pem.decode(), safe="")
