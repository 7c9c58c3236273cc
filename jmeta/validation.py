"""Argument checks that run in Python, before anything is traced or compiled.

Every error names the argument, what was given and what is allowed, e.g.::

    >>> positive_int("steps", 0)
    Traceback (most recent call last):
    ValueError: steps must be a positive integer (>= 1); got 0.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Returns ``value`` as an int, or raises naming ``name`` if it is not a positive integer."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        kind = "a non-negative integer (>= 0)" if allow_zero else "a positive integer (>= 1)"
        raise ValueError(f"{name} must be {kind}; got {value!r}.")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises naming ``name`` if it is not a finite number > 0. A traced
    value (a population member's swept hyperparameter, :mod:`jmeta.population`, whose concrete values were
    checked before tracing) is returned as it is."""
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Returns ``value`` if it is one of ``allowed``, else raises naming ``name`` and the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
    return value
