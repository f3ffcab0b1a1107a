"""The bundled digits: the same arrays as scikit-learn's, read-only inside, fresh outside."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradhealth
from gradhealth import data

# The SHA-256 of `sklearn.datasets.load_digits()`'s `data.astype(uint8)` and
# `target.astype(uint8)` (scikit-learn 1.x), recorded when the file was written.
IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # the UCI test set's


def test_load_digits_gives_scikit_learns_arrays():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int32
    assert np.array_equal(x, np.round(x)) and x.min() == 0 and x.max() == 16
    assert hashlib.sha256(x.astype(np.uint8).tobytes()).hexdigest() == IMAGES_SHA256
    assert hashlib.sha256(y.astype(np.uint8).tobytes()).hexdigest() == LABELS_SHA256
    assert np.bincount(y).tolist() == CLASS_COUNTS


def test_the_readme_next_to_the_file_states_the_digests_and_the_license():
    text = (Path(gradhealth.__file__).parent / "_datasets" / "README.md").read_text()
    assert IMAGES_SHA256 in text and LABELS_SHA256 in text and "CC BY 4.0" in text


def test_the_package_data_setting_ships_the_file():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"_datasets/*.npz"' in pyproject
    assert "scikit-learn" not in pyproject  # Keras imports it on every import when installed


def test_callers_get_fresh_writable_arrays():
    x, y = data.load_digits()
    x[:] = -1.0
    y[:] = -1
    x2, y2 = data.load_digits()
    assert x2.min() == 0 and y2.min() == 0
    xtr, ytr, _, _ = data.load_digits_split()
    xtr[:] = 0.0
    assert data.load_digits_split()[0].std() > 0.5


def test_split_is_a_permutation_of_the_digits_with_train_statistics():
    x, y = data.load_digits()
    xtr, ytr, xte, yte = data.load_digits_split(test_fraction=0.25, seed=0, standardize=False)
    assert len(xte) == 449 and len(xtr) == 1348
    both = np.concatenate([xtr, xte]).astype(np.float64)
    # the same multiset of (image, label) rows
    key = lambda a, b: sorted(map(tuple, np.column_stack([a, b]).tolist()))  # noqa: E731
    assert key(both, np.concatenate([ytr, yte])) == key(x, y)
    s_tr, _, s_te, _ = data.load_digits_split(test_fraction=0.25, seed=0)
    mean, std = xtr.astype(np.float64).mean(0), xtr.astype(np.float64).std(0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(s_te, (xte - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_tr.mean(0), 0.0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 1348), seed=st.integers(0, 2 ** 32 - 1))
def test_digits_batch_is_the_split_head(batch, seed):
    x, y = data.digits_batch(batch, seed=seed)
    xtr, ytr, _, _ = data.load_digits_split(seed=seed)
    assert x.shape == (batch, 64) and np.array_equal(x, xtr[:batch])
    assert np.array_equal(y, ytr[:batch])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction_is_named(bad):
    with pytest.raises(ValueError, match=r"test_fraction=.*" + str(bad).replace(".", r"\.")):
        data.load_digits_split(test_fraction=bad)


def test_too_large_batch_is_named():
    with pytest.raises(ValueError, match="batch_size=1349"):
        data.digits_batch(1349)
