"""Pinned trust anchors, shipped as package data and checked against their published fingerprints.

AMD: the ARK and ASK (VCEK chain) or ASVK (VLEK chain) per product line, as AMD's KDS serves them
(`/vcek/v1/<product>/cert_chain`, `/vlek/v1/<product>/cert_chain`). Intel: the SGX Root CA that
anchors every DCAP PCK certificate, TCB info, QE identity and CRL. The fingerprints below are the
SHA-256 of each certificate's DER; loading fails if a file on disk does not match, so a swapped
file cannot silently become a new root.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PRODUCTS: tuple[str, ...] = ("Milan", "Genoa", "Turin")

ARK_SHA256: dict[str, str] = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
ASK_SHA256: dict[str, str] = {
    "Milan": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    "Genoa": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    "Turin": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
}
ASVK_SHA256: dict[str, str] = {
    "Milan": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    "Genoa": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    "Turin": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

_FILES: dict[tuple[str, str], str] = {
    ("Milan", "vcek"): "ask_ark_milan.pem",
    ("Genoa", "vcek"): "ask_ark_genoa.pem",
    ("Turin", "vcek"): "ask_ark_turin_vcek.pem",
    ("Milan", "vlek"): "ask_ark_milan_vlek.pem",
    ("Genoa", "vlek"): "ask_ark_genoa_vlek.pem",
    ("Turin", "vlek"): "ask_ark_turin_vlek.pem",
}


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _pinned(cert: x509.Certificate, expected: str, what: str) -> x509.Certificate:
    got = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    if got != expected:
        raise RuntimeError(f"pinned {what} on disk does not match its fingerprint ({got})")
    return cert


@cache
def amd_chain(product: str, kind: str) -> tuple[x509.Certificate, x509.Certificate]:
    """(ARK, ASK) for kind 'vcek' or (ARK, ASVK) for kind 'vlek' of a product line."""
    if (product, kind) not in _FILES:
        raise KeyError(f"no pinned AMD chain for {product}/{kind}")
    ask, ark = x509.load_pem_x509_certificates(_read(_FILES[(product, kind)]))
    _pinned(ark, ARK_SHA256[product], f"ARK-{product}")
    _pinned(ask, (ASK_SHA256 if kind == "vcek" else ASVK_SHA256)[product], f"{kind} intermediate {product}")
    return ark, ask


@cache
def intel_root() -> x509.Certificate:
    """The Intel SGX Root CA."""
    cert = x509.load_der_x509_certificate(_read("intel_sgx_root_ca.der"))
    return _pinned(cert, INTEL_SGX_ROOT_CA_SHA256, "Intel SGX Root CA")
