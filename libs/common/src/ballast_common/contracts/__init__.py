"""Versioned event contracts: the envelope, one payload model per (event type, version)."""

from ballast_common.contracts.envelope import Envelope, EnvelopeError, decode_envelope
from ballast_common.contracts.registry import CONTRACTS, Contract, contract_for, latest

__all__ = [
    "CONTRACTS",
    "Contract",
    "Envelope",
    "EnvelopeError",
    "contract_for",
    "decode_envelope",
    "latest",
]
