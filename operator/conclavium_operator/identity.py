"""Member identities: the public key from a Secret or inline PEM, and the operator's proposer key.

Problems are `IdentityProblem`s with a CamelCase reason for the `IdentityValid` condition, so a bad
identity is reported on the resource instead of failing the handler over and over.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from conclavium.crypto.keys import KeyError_, PrivateKey, PublicKey
from conclavium_operator.kube import SECRETS, Kube

ALGORITHMS = {"Ed25519": "Ed25519", "ECDSA-P256": "ES256", "ECDSA-P384": "ES384"}


class IdentityProblem(Exception):
    """Why an identity cannot be used; `retry` is True when waiting can fix it (a Secret not there yet)."""

    def __init__(self, reason: str, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.retry = reason, message, retry


@dataclass(frozen=True)
class Identity:
    public_key: PublicKey
    pem: str

    @property
    def fingerprint(self) -> str:
        """The ledger's key id: SHA-256 of the DER SubjectPublicKeyInfo."""
        return self.public_key.key_id


async def _secret_value(kube: Kube, namespace: str, name: str, key: str) -> str:
    secret = await kube.get(SECRETS, namespace, name)
    if secret is None:
        raise IdentityProblem("SecretNotFound", f"Secret {name!r} not found in {namespace}", retry=True)
    if key in (secret.get("data") or {}):
        try:
            return base64.b64decode(secret["data"][key]).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise IdentityProblem("SecretKeyMalformed", f"Secret {name!r} key {key!r} is not base64 text") from e
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    raise IdentityProblem("SecretKeyMissing", f"Secret {name!r} has no key {key!r}", retry=True)


async def load_identity(kube: Kube, namespace: str, spec: dict[str, Any]) -> Identity:
    """The member's public key, checked against its declared algorithm; private keys inline are refused."""
    ident = spec.get("identity") or {}
    alg = ALGORITHMS.get(str(ident.get("keyAlgorithm")))
    if alg is None:
        raise IdentityProblem("UnsupportedKeyAlgorithm", f"keyAlgorithm must be one of {sorted(ALGORITHMS)}")
    ref, inline = ident.get("secretRef"), ident.get("publicKeyPem")
    if bool(ref) == bool(inline):
        raise IdentityProblem(
            "IdentitySourceInvalid", "set exactly one of identity.secretRef and identity.publicKeyPem"
        )
    if inline:
        if "PRIVATE KEY" in inline:
            raise IdentityProblem("PrivateKeyInline", "identity.publicKeyPem holds a private key; give the public key")
        pem = str(inline)
    else:
        pem = await _secret_value(kube, namespace, ref["name"], ref.get("certificateKey") or "tls.crt")
        if "PRIVATE KEY" in pem:
            raise IdentityProblem("PrivateKeyInCertificateKey", "the certificate key of the Secret holds a private key")
    try:
        key = PublicKey.load(pem)
    except KeyError_ as e:
        raise IdentityProblem("InvalidPublicKey", str(e)) from e
    if key.alg != alg:
        raise IdentityProblem(
            "KeyAlgorithmMismatch", f"keyAlgorithm is {ident['keyAlgorithm']} but the key is {key.alg}"
        )
    return Identity(key, pem if "CERTIFICATE" in pem else key.pem)


def can_sign(spec: dict[str, Any]) -> bool:
    """Whether the member lets the operator sign with its key (inClusterSigning + privateKeyKey)."""
    ident = spec.get("identity") or {}
    ref = ident.get("secretRef") or {}
    return bool(ident.get("inClusterSigning")) and bool(ref.get("privateKeyKey"))


def in_cluster_signing_allowed(consortium: dict[str, Any] | None) -> bool:
    """In-cluster signing puts members' private keys in Kubernetes Secrets, so whoever administers
    the cluster holds k members' keys: only a development consortium may use it. Staging and
    production members sign offline and the operator forwards their documents (signed_documents)."""
    return ((consortium or {}).get("spec") or {}).get("environment", "production") == "development"


def signing_refusal(consortium: dict[str, Any] | None) -> str:
    environment = ((consortium or {}).get("spec") or {}).get("environment", "production")
    return (
        f"in-cluster signing is for development consortiums only, this one is {environment}: the operator "
        "does not read the member's private key. Sign governance documents offline "
        "(conclavium gov propose|vote|withdraw ... --sign-only FILE) and hand them over in a ConfigMap "
        "labelled conclavium.io/governance-document"
    )


async def load_signing_key(kube: Kube, namespace: str, spec: dict[str, Any]) -> PrivateKey:
    ref = spec["identity"]["secretRef"]
    pem = await _secret_value(kube, namespace, ref["name"], ref["privateKeyKey"])
    try:
        return PrivateKey.load(pem)
    except (KeyError_, ValueError) as e:
        raise IdentityProblem("InvalidPrivateKey", f"Secret {ref['name']!r}: {e}") from e
