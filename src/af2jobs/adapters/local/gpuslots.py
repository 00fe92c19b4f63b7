"""The local worker's GPU slots: their ids from AF2_GPUS, and the JAX device each slot pins its thread to."""

from __future__ import annotations

from typing import Any

from af2jobs import errors


def parse_gpus(text: str) -> list[str | None]:
    """GPU slot ids from AF2_GPUS ("0,1"); one slot on whatever JAX sees (None) when empty."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if any(not i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise errors.ConfigurationError(f"AF2_GPUS (--gpus) must list distinct GPU numbers like 0,1; got {text!r}")
    return list(ids) or [None]


def devices(slots: list[str | None]) -> list[Any]:
    """The JAX device each slot pins its thread to (None: JAX's default)."""
    if slots == [None]:
        return [None]
    import jax

    by_id = {d.id: d for d in jax.devices()}
    missing = [s for s in slots if int(s) not in by_id]
    if missing:
        raise errors.ConfigurationError(
            f"AF2_GPUS (--gpus) names {', '.join(missing)}, but JAX sees devices {sorted(by_id)} ({jax.default_backend()})"
        )
    return [by_id[int(s)] for s in slots]
