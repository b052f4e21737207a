"""Conclavium's Kubernetes operator (kopf): Consortium, ConsortiumMember and ConsortiumNode resources.

It meets the ledger only through the gateway's HTTP API (the SDK client) and the cluster only
through the Kubernetes API. `kopf run -m conclavium_operator.handlers` loads the registrations.
"""

GROUP = "conclavium.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
