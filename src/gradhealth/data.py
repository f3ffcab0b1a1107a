"""Small offline datasets. Nothing here downloads: the digits ship inside this package.

The digits are the 1797 8x8 images of the UCI "Optical Recognition of Handwritten Digits" test
set (Alpaydin & Kaynak, 1998; CC BY 4.0), the same arrays, in the same order, as
``sklearn.datasets.load_digits()``. They are stored here (``_datasets/digits.npz``, 45 kB)
rather than read from scikit-learn because Keras imports scikit-learn, when it is installed,
every time it is imported (for ``keras.wrappers``): 0.4-0.6 s in each of the six course kernels
on a 2-core machine, for one 115 kB array.

References:
    Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine
    Learning Repository. https://doi.org/10.24432/C50P49
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from gradhealth._internal.validation import check_positive_int

__all__ = ["digits_batch", "load_digits", "load_digits_split", "synthetic_classification"]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.as_file(resources.files("gradhealth") / "_datasets" / "digits.npz") as path, \
            np.load(path) as stored:
        images, labels = stored["images"], stored["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 handwritten digits: the images and labels of ``sklearn.datasets.load_digits()``.

    Returns:
        ``(x, y)``: float64 pixel counts in 0..16 of shape ``(1797, 64)`` (row-major 8x8
        images) and int32 labels 0-9, in the order scikit-learn uses; new arrays on every
        call, which the caller may change.

    Example:
        >>> x, y = load_digits()
        >>> x.shape, int(x.max()), sorted(set(y.tolist())) == list(range(10))
        ((1797, 64), 16, True)

    References:
        Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI
        Machine Learning Repository. https://doi.org/10.24432/C50P49
    """
    images, labels = _digits_arrays()
    return images.astype(np.float64), labels.astype(np.int32)


def load_digits_split(test_fraction: float = 0.25, seed: int = 0, standardize: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 8x8 digits (:func:`load_digits`: 1797 images, 10 classes) as a shuffled train/test
    split.

    Args:
        test_fraction: Share of examples held out, in (0, 1).
        seed: Shuffle seed.
        standardize: Scale every pixel feature to zero mean, unit variance using train statistics
            (pixels with zero variance are left centred). Standardized inputs are what
            Glorot/He initialization assume.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 features of shape ``(n, 64)`` and int32
        labels.

    Raises:
        ValueError: If ``test_fraction`` is not in (0, 1).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"Argument `test_fraction` must be in (0, 1). Received: test_fraction={test_fraction!r}"
        )
    x, y = load_digits()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(round(len(x) * test_fraction))
    x_train, x_test, y_train, y_test = x[n_test:], x[:n_test], y[n_test:], y[:n_test]
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return (x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test)


def digits_batch(batch_size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One standardized batch of digits for a gradient checkup.

    Args:
        batch_size: Number of examples (at most 1348, the training split's size).
        seed: Shuffle seed.

    Returns:
        ``(x, y)`` float32 features ``(batch_size, 64)`` and int32 labels.
    """
    check_positive_int("batch_size", batch_size)
    x, y, _, _ = load_digits_split(seed=seed)
    if batch_size > len(x):
        raise ValueError(
            f"Argument `batch_size` must be at most {len(x)}. Received: batch_size={batch_size}"
        )
    return x[:batch_size], y[:batch_size]


def synthetic_classification(n: int = 256, input_dim: int = 64, num_classes: int = 10,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features with labels from a random linear teacher: learnable, instant, offline.

    Args:
        n: Number of examples.
        input_dim: Features per example.
        num_classes: Number of classes.
        seed: RNG seed.

    Returns:
        ``(x, y)``: float32 ``(n, input_dim)`` standard-normal features and int32 labels.
    """
    for name, value in (("n", n), ("input_dim", input_dim), ("num_classes", num_classes)):
        check_positive_int(name, value)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, input_dim)).astype(np.float32)
    teacher = rng.standard_normal((input_dim, num_classes))
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)
    return x, y
