"""One shape for every list endpoint: `Page[T]`, a page of items and where the next one starts.

A route takes `limit` (its own default and maximum) and `offset: Offset`, asks its repository
for `limit + 1` rows (the extra row only tells that there is a next page; no count is needed)
and returns `Page.of(rows, limit, offset)`. A client reads `items` and asks again with
`offset=next_offset` until `next_offset` is null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

Offset = Annotated[int, Query(ge=0, description="how many items come before the page")]


class Page(BaseModel, Generic[T]):
    """A page of a list, in the list's order."""

    items: list[T]
    limit: int = Field(description="the most items a page holds (as asked)")
    offset: int = Field(description="how many items come before this page")
    next_offset: int | None = Field(
        description="pass as `offset` for the next page; null on the last page"
    )
    total: int | None = Field(
        default=None, description="how many items the list has, where the endpoint counts them"
    )

    @classmethod
    def of(cls, rows: Sequence[T], limit: int, offset: int) -> Page[T]:
        """The page of `rows` fetched with `limit + 1`: more than `limit` means a next page."""
        return cls(
            items=list(rows[:limit]),
            limit=limit,
            offset=offset,
            next_offset=offset + limit if len(rows) > limit else None,
        )

    @classmethod
    def counted(cls, items: Sequence[T], limit: int, offset: int, total: int) -> Page[T]:
        """A page of a list whose length is known (`total`)."""
        return cls(
            items=list(items),
            limit=limit,
            offset=offset,
            next_offset=offset + limit if offset + limit < total else None,
            total=total,
        )
