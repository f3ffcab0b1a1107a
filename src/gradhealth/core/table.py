"""A few equal-length NumPy columns: the form the diagnosis works on.

A checkup's tables have one row per variable or per layer (tens to hundreds of rows). Building,
copying and indexing a ``pandas.DataFrame`` costs tens of microseconds per operation at that
size, which added up to 5-10 ms per checkup, as much as the forward and backward pass of a
small model. The diagnosis therefore computes on plain columns and a report turns them into a
DataFrame only when a user reads ``report.layers`` or ``report.variables``.

Example:
    >>> t = Table({"layer": ["a", "b"], "grad_norm": [1e-3, 0.5]})
    >>> len(t), t["grad_norm"].max()
    (2, 0.5)
    >>> t.take(t["grad_norm"] > 0.1)["layer"].tolist()
    ['b']
    >>> t.to_frame().shape
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Table", "as_table", "like"]


class Table:
    """Named NumPy columns of one length, in order.

    Args:
        columns: Column name -> values (anything ``np.asarray`` takes; tuples of ints, such as
            shapes, are kept as Python objects).

    Raises:
        ValueError: Columns of different lengths.
    """

    __slots__ = ("_columns", "_rows")

    def __init__(self, columns: Mapping[str, Any]) -> None:
        cols: dict[str, np.ndarray] = {}
        rows = None
        for name, values in columns.items():
            array = _column(values)
            if rows is None:
                rows = len(array)
            elif len(array) != rows:
                raise ValueError(
                    f"Every column must have the same length. Received: column {name!r} with "
                    f"{len(array)} values, the others with {rows}")
            cols[name] = array
        self._columns = cols
        self._rows = rows or 0

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self._columns)

    def get(self, name: str, default: Any = None) -> Any:
        """The column ``name``, or ``default`` when there is none."""
        return self._columns.get(name, default)

    def take(self, rows: np.ndarray | Iterable[int]) -> Table:
        """The rows selected by a boolean mask or a sequence of positions."""
        index = np.asarray(rows)
        if index.dtype != bool:
            index = index.astype(np.int64)
        out = Table.__new__(Table)
        out._columns = {k: v[index] for k, v in self._columns.items()}
        out._rows = int(index.sum()) if index.dtype == bool else len(index)
        return out

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict of plain values."""
        return {k: v[i] for k, v in self._columns.items()}

    def with_columns(self, **columns: Any) -> Table:
        """A copy with ``columns`` added or replaced (the arrays are shared, not copied)."""
        return Table({**self._columns, **columns})

    def to_frame(self) -> pd.DataFrame:
        """The table as a ``pandas.DataFrame`` (same columns, in order)."""
        return pd.DataFrame(self._columns, columns=list(self._columns))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Table:
        """The columns of a DataFrame (its index is dropped)."""
        return cls({str(c): frame[c].to_numpy() for c in frame.columns})

    def __repr__(self) -> str:
        return f"Table({self._rows} rows: {', '.join(self._columns)})"


def _column(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, pd.Series):
        return values.to_numpy()
    values = list(values)
    # Shapes (tuples) stay one object per row; text stays Python str, so that a longer
    # string can be stored later without NumPy's fixed-width truncation.
    if values and isinstance(values[0], (tuple, list, str)):
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            out[i] = value
        return out
    return np.asarray(values)


def as_table(data: pd.DataFrame | Table) -> Table:
    """``data`` as a :class:`Table` (a DataFrame's columns; a Table as is).

    Raises:
        TypeError: Anything else.
    """
    if isinstance(data, Table):
        return data
    if isinstance(data, pd.DataFrame):
        return Table.from_frame(data)
    raise TypeError("Expected a pandas DataFrame or a gradhealth Table of statistics. "
                    f"Received: {type(data).__name__}")


def like(data: pd.DataFrame | Table, table: Table) -> pd.DataFrame | Table:
    """``table`` in the kind of ``data``: a DataFrame for a DataFrame, else the Table."""
    return table.to_frame() if isinstance(data, pd.DataFrame) else table
