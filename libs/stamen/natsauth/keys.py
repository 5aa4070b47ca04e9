"""NKEY user key pairs (Ed25519): the seed goes to the lab system once, the public key to nats-server."""

from __future__ import annotations

import os
from collections.abc import Callable

import nkeys

_SEED_PREFIX = "SU"  # a user seed; nats-server users are the public keys starting with "U"


def generate_user_key(random_bytes: Callable[[int], bytes] = os.urandom) -> tuple[str, str]:
    """A new user key pair: (seed, public key), both in NATS's base32 text form."""
    seed: bytes = nkeys.encode_seed(random_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), public_key_of(seed.decode())


def public_key_of(seed: str) -> str:
    """The public key of a user seed; ValueError when `seed` is not one."""
    if not seed.startswith(_SEED_PREFIX):
        raise ValueError("not an NKEY user seed (it starts with 'SU')")
    try:
        pair = nkeys.from_seed(seed.encode())
    except nkeys.NkeysError as exc:
        raise ValueError(f"not an NKEY user seed: {exc}") from None
    public: bytes = pair.public_key
    return public.decode()
