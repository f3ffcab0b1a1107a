"""Per-layer seeded initializers, shared by the model builders."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["seeded_initializer"]


def seeded_initializer(initializer: Any, seed: int | None, offset: int
                       ) -> keras.initializers.Initializer:
    """Return ``initializer`` as an Initializer object whose seed is ``seed + offset``.

    Seeding every layer separately makes a model identical across runs; unseeded, each layer
    would draw from Keras' global generator and depend on everything built before it.

    Args:
        initializer: A Keras initializer name, config or object.
        seed: Base seed; None leaves the initializer as it is.
        offset: Added to ``seed`` (the layer's index), so layers differ.

    Returns:
        An initializer object.

    Raises:
        ValueError: ``initializer`` is not a Keras initializer.
    """
    try:
        init = keras.initializers.get(initializer)
    except ValueError as e:
        raise ValueError(
            "Argument `kernel_initializer` must be a Keras initializer name or object. "
            f"Received: kernel_initializer={initializer!r}"
        ) from e
    if seed is None:
        return init
    config = init.get_config()
    if "seed" in config:
        config["seed"] = seed + offset
        init = init.__class__.from_config(config)
    return init
