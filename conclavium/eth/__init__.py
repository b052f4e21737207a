"""Ethereum's wire formats as the ledger uses them: raw transactions (legacy, EIP-155, EIP-2930,
EIP-1559), Keccak, sender recovery, intrinsic gas, the chain configuration governance sets, and
the JSON-RPC quantity encodings. Defined once here; the gateway's JSON-RPC router and the
executor's EVM application both use them.
"""
