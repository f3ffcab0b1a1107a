"""Griffe extension for the API reference: the house's ``Example:`` sections are examples.

The docstrings follow Google style with a singular ``Example:`` heading (docs/ARCHITECTURE.md,
shared STYLE.md). Griffe reads only the plural ``Examples:`` as an examples section (``>>>``
lines shown as code); the singular would be rendered as prose, where ``>>> x['a']`` reads as a
Markdown link. This renames the heading before the docstring is parsed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    """Rewrite ``Example:`` to ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
