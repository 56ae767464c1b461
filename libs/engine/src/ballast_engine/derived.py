"""Values derived from frozen objects, kept beside them instead of written into them.

A trade's sentence and a drift report's items are made when first read; the lookups of a
``Reference`` are worked out once per reference. Each is kept in a ``DerivedValues`` table by
the object's id and dropped when the object is collected (a weak reference's callback), so
the frozen objects stay exactly as they were built.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

Recipe = tuple[Callable[..., Any], tuple[Any, ...]]  # (function, arguments)


class DerivedValues:
    """One derived value per live object: made by its recipe on the first request."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[int, tuple[Any, weakref.ref[Any]]] = {}

    def value(self, owner: Any, recipe: Recipe) -> Any:
        """``recipe[0](*recipe[1])`` for ``owner``: made on the first call, then kept."""
        key = id(owner)
        hit = self._values.get(key)
        if hit is not None:
            return hit[0]
        made = recipe[0](*recipe[1])
        values = self._values
        values[key] = (made, weakref.ref(owner, lambda _gone: values.pop(key, None)))
        return made

    def __len__(self) -> int:
        return len(self._values)
