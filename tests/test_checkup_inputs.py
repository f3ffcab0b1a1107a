"""checkup / gradient_stats / layer_gradients take every input form fit takes (each backend).

References are closed-form float64 NumPy gradients of linear models (obviously correct and
backend-independent): for ``pred = X W + b`` and a weighted mean squared error
``L = sum_i s_i * mean_k (pred_ik - y_ik)^2 / n``, ``dL/dW = 2 X^T (s * r) / (n k)`` with
``r = pred - y``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradhealth as gh
from gradhealth.adapters import trace_count
from gradhealth.core.stats import STAT_COLUMNS, tensor_stats

N = 16
RNG = np.random.default_rng(0)
XA = RNG.normal(size=(N, 3)).astype("float32")
XB = RNG.normal(size=(N, 2)).astype("float32")
Y1 = RNG.normal(size=(N, 1)).astype("float32")
Y2 = RNG.normal(size=(N, 2)).astype("float32")
SW = RNG.uniform(0.1, 2.0, size=N).astype("float32")


def numpy_of(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable.value).astype(np.float64)


def mse_grads(x, kernel, bias, y, sample_weight=None, factor=1.0):
    """float64 gradients of factor * weighted MSE for a linear layer."""
    x = np.asarray(x, np.float64)
    r = x @ kernel + bias - y
    s = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    scale = factor * 2.0 / (len(x) * y.shape[1])
    return x.T @ (s[:, None] * r) * scale, (s[:, None] * r).sum(axis=0) * scale


def two_input_model() -> keras.Model:
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    o1 = keras.layers.Dense(1, name="o1", bias_initializer="glorot_uniform")(h)
    o2 = keras.layers.Dense(2, name="o2", bias_initializer="glorot_uniform")(a)
    return keras.Model([a, b], [o1, o2], name="two_in_two_out")


def single_output_two_inputs() -> keras.Model:
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Concatenate()([a, b])
    return keras.Model([a, b], keras.layers.Dense(1, name="head")(h), name="two_in")


def assert_close(got, want, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=1e-6)


# --- several inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["list", "tuple", "dict"])
def test_two_same_shape_inputs_are_fed_not_stacked(form):
    model = single_output_two_inputs()
    xb = RNG.normal(size=(N, 3)).astype("float32")
    x = {"list": [XA, xb], "tuple": (XA, xb), "dict": {"b": xb, "a": XA}}[form]
    grads = gh.layer_gradients(model, x, Y1, loss="mse")
    head = model.get_layer("head")
    gk, gb = mse_grads(np.concatenate([XA, xb], axis=1), numpy_of(head.kernel),
                       numpy_of(head.bias), Y1)
    assert_close(grads["head/kernel"], gk)
    assert_close(grads["head/bias"], gb)
    report = gh.checkup(model, x, Y1, loss="mse")
    assert list(report.layers["layer"]) == ["head"]


def test_multi_output_dict_loss_and_loss_weights_from_compile():
    model = two_input_model()
    model.compile(optimizer="sgd", loss={"o1": "mse", "o2": "mse"},
                  loss_weights={"o1": 1.0, "o2": 0.5})
    grads = gh.layer_gradients(model, [XA, XB], {"o1": Y1, "o2": Y2})
    o1, o2 = model.get_layer("o1"), model.get_layer("o2")
    g1 = mse_grads(np.concatenate([XA, XB], axis=1), numpy_of(o1.kernel), numpy_of(o1.bias), Y1)
    g2 = mse_grads(XA, numpy_of(o2.kernel), numpy_of(o2.bias), Y2, factor=0.5)
    assert_close(grads["o1/kernel"], g1[0])
    assert_close(grads["o2/kernel"], g2[0])
    assert_close(grads["o2/bias"], g2[1])
    # the same through the statistics reduced on the device
    stats = gh.gradient_stats(model, [XA, XB], [Y1, Y2]).set_index("path")
    assert stats.loc["o2/kernel", "grad_norm"] == pytest.approx(np.linalg.norm(g2[0]), rel=1e-5)


def test_explicit_list_loss_per_output_and_sample_weight():
    model = two_input_model()
    grads = gh.layer_gradients(model, {"a": XA, "b": XB}, [Y1, Y2], loss=["mse", None],
                               sample_weight=SW)
    o1 = model.get_layer("o1")
    g1 = mse_grads(np.concatenate([XA, XB], axis=1), numpy_of(o1.kernel), numpy_of(o1.bias), Y1,
                   sample_weight=SW)
    assert_close(grads["o1/kernel"], g1[0])
    assert_close(grads["o1/bias"], g1[1])
    assert np.all(grads["o2/kernel"] == 0)  # output without a loss: no gradient


def test_sample_weight_with_compiled_loss():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="d")])
    model.compile(optimizer="sgd", loss="mse")
    grads = gh.layer_gradients(model, XA, Y1, sample_weight=SW)
    d = model.get_layer("d")
    gk, gb = mse_grads(XA, numpy_of(d.kernel), numpy_of(d.bias), Y1, sample_weight=SW)
    assert_close(grads[d.kernel.path], gk)
    assert_close(grads[d.bias.path], gb)
    report = gh.checkup(model, XA, Y1, sample_weight=SW)
    assert report.variables["grad_norm"].iloc[0] == pytest.approx(np.linalg.norm(gk), rel=1e-5)


# --- add_loss and regularization ------------------------------------------------------------


class AddLossOnly(keras.Model):
    """Trained by its add_loss term alone: loss = mean(out^2)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, name="d")

    def call(self, x):
        out = self.dense(x)
        self.add_loss(keras.ops.mean(keras.ops.square(out)))
        return out


def test_add_loss_only_model_with_no_targets():
    model = AddLossOnly()
    model(XA[:2])
    model.compile(optimizer="sgd", loss=None)
    grads = gh.layer_gradients(model, XA)
    d = model.dense
    gk, gb = mse_grads(XA, numpy_of(d.kernel), numpy_of(d.bias), np.zeros((N, 1)))
    values = list(grads.values())
    assert_close(values[0], gk)
    assert_close(values[1], gb)


def test_regularization_is_part_of_the_loss_as_in_fit():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        1, name="d", kernel_regularizer=keras.regularizers.L2(0.1))])
    grads = gh.layer_gradients(model, XA, Y1, loss="mse")
    d = model.get_layer("d")
    gk, _ = mse_grads(XA, numpy_of(d.kernel), numpy_of(d.bias), Y1)
    assert_close(grads[d.kernel.path], gk + 0.2 * numpy_of(d.kernel))


# --- subclassed models and the training argument --------------------------------------------


class WithTraining(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, name="d")

    def call(self, x, training=None):
        return self.dense(x) * (2.0 if training else 1.0)


class WithoutTraining(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, name="d")

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("cls,factor", [(WithTraining, 2.0), (WithoutTraining, 1.0)])
def test_subclassed_models_get_training_only_when_call_accepts_it(cls, factor):
    model = cls()
    model(XA[:2])
    grads = list(gh.layer_gradients(model, XA, np.zeros((N, 1), "float32"), loss="mse").values())
    d = model.dense
    # loss = mean((f * (x W + b))^2): d/dW = 2 f^2 x^T (x W + b) / n
    gk, gb = mse_grads(XA, numpy_of(d.kernel), numpy_of(d.bias), np.zeros((N, 1)),
                       factor=factor**2)
    assert_close(grads[0], gk)
    assert_close(grads[1], gb)
    assert gh.checkup(model, XA, np.zeros((N, 1), "float32"), loss="mse").status in (
        "healthy", "vanishing", "exploding", "dead")


# --- data sources: one batch ----------------------------------------------------------------


class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return XA[8 * i: 8 * i + 8], Y1[8 * i: 8 * i + 8]


def dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="d")])
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize("source", ["tf.data", "PyDataset", "generator", "DataLoader"])
def test_data_sources_give_their_first_batch(source):
    model = dense_model()
    if source == "tf.data":
        data = tf.data.Dataset.from_tensor_slices((XA, Y1)).batch(8)
    elif source == "PyDataset":
        data = Batches()
    elif source == "generator":
        data = ((XA[i: i + 8], Y1[i: i + 8]) for i in (0, 8))
    else:
        data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(XA), torch.from_numpy(Y1)),
            batch_size=8)
    got = gh.gradient_stats(model, data)
    want = gh.gradient_stats(model, XA[:8], Y1[:8])
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-6)
    if source == "generator":  # advanced by exactly one batch
        x_next, _ = next(data)
        np.testing.assert_array_equal(x_next, XA[8:])
    report = gh.checkup(model, Batches())
    assert report.status in ("healthy", "vanishing", "exploding", "dead")


def test_data_source_with_sample_weights():
    model = dense_model()
    data = tf.data.Dataset.from_tensor_slices((XA, Y1, SW)).batch(N)
    got = gh.gradient_stats(model, data)
    want = gh.gradient_stats(model, XA, Y1, sample_weight=SW)
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-6)


# --- mixed precision ------------------------------------------------------------------------


@pytest.fixture()
def policy():
    before = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(before)


def small_signal_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1, name="out")])


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("factor", [1e-7, 1e2])
def test_mixed_precision_statistics_are_float32_without_false_underflow_or_overflow(
        policy, name, factor):
    reference = small_signal_model(3)
    policy(name)
    mixed = small_signal_model(3)
    for src, dst in zip(reference.weights, mixed.weights, strict=True):
        dst.assign(src.value)
    # float16 cannot hold the output gradients of the 1e-7 loss (~1e-9, below its 6e-8
    # subnormals) without loss scaling, nor the scaled ones of the 1e2 loss (~1e6 > 65504).
    # Targets far from the outputs keep every residual positive: sums of residuals do not
    # cancel, so the low-precision activations cost ~1e-2 relative, not more.
    sw, y = np.full(N, factor, "float32"), np.full((N, 1), -3.0, "float32")
    want = gh.gradient_stats(reference, XA, y, loss="mse", sample_weight=sw)
    got = gh.gradient_stats(mixed, XA, y, loss="mse", sample_weight=sw)
    grads = gh.layer_gradients(mixed, XA, y, loss="mse", sample_weight=sw)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert (got["nonfinite_count"] == 0).all()
    assert (got["grad_norm"] > 0).all()
    rtol = 2e-2 if name == "mixed_float16" else 5e-2  # float16 / bfloat16 activations
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=rtol)


# --- speed contract: no retrace -------------------------------------------------------------


def test_a_model_is_traced_at_most_once(digits, ce_loss):
    """TensorFlow runs a model's first two checkups eagerly and traces on the third; JAX traces
    on the first; torch never traces. After that, no checkup of the model traces again."""
    model = gh.models.deep_mlp(3, width=16)
    x, y = digits
    counts = []
    for i in range(5):
        loss = ce_loss if i % 2 else gh.models.classification_loss()  # equal, new Loss objects
        gh.checkup(model, x, y, loss=loss)
        counts.append(trace_count(model))
    gh.gradient_stats(model, x, y, loss=ce_loss)
    assert counts[2] == counts[3] == counts[4] == trace_count(model) == 1, counts


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's probe step")
def test_tensorflow_step_calls_the_concrete_function_of_each_signature(digits):
    """The compiled probe calls the concrete function of its arguments' signature directly.
    Batches that change size and sample weights that come and go must still get their own
    numbers (those of a fresh model's eager pass), and no more traces than tf.function makes
    (the exact shape, then relaxed shapes, each with and without sample weights)."""
    from gradhealth.adapters import tensorflow_adapter

    x, y = digits
    model = gh.models.deep_mlp(3, width=16)
    loss = gh.models.classification_loss()
    calls = [(x[:64], y[:64], None), (x[:100], y[:100], None),
             (x[:64], y[:64], np.linspace(0.5, 2.0, 64).astype("float32")),
             (x[:80], y[:80], None), (x[:80], y[:80], np.full(80, 3.0, "float32"))]
    for batch in calls[:2]:  # the eager passes (tensorflow_adapter.EAGER_CALLS)
        gh.gradient_stats(model, batch[0], batch[1], loss=loss, sample_weight=batch[2])
    for _ in range(2):
        for xb, yb, sw in calls:
            got = gh.gradient_stats(model, xb, yb, loss=loss, sample_weight=sw)
            fresh = keras.models.clone_model(model)
            fresh.set_weights(model.get_weights())
            want = gh.gradient_stats(fresh, xb, yb, loss=loss, sample_weight=sw)  # eager
            np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
    assert trace_count(model) <= 4

    signature = tensorflow_adapter._signature
    a = np.zeros((2, 3), "float32")
    assert signature((a, None)) == signature((np.ones((2, 3), "float32"), None))
    for other in ((a[:1], None), (a.astype("float64"), None), (a, a), [a, None],
                  (tf.constant(a), None), (a, 1.0)):
        assert signature(other) != signature((a, None)), other
    assert signature({"b": a, "a": None}) == signature({"a": None, "b": a})
    assert signature((a, 1.0)) != signature((a, 2.0))  # a Python scalar is baked into a trace
    for unknown in (np.float32(1.0), object(), {1: a, "a": a}):
        with pytest.raises(tensorflow_adapter._Uncacheable):
            signature(unknown)


def test_probe_lists_the_variables_keras_lists():
    """The probe walks the layers once for what ``trainable_variables`` and ``variables`` give:
    the same variables in the same order, after freezing a layer, a nested model or the whole
    model, and a model class's own ``trainable_variables`` wins."""
    from gradhealth.adapters import _variables

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))

    def same(m):
        trainable, variables = _variables(m)
        assert [v.path for v in trainable] == [v.path for v in m.trainable_variables]
        assert [v.path for v in variables] == [v.path for v in m.variables]

    same(model)
    inner.layers[0].trainable = False
    same(model)
    inner.trainable = False
    same(model)
    model.trainable = False
    same(model)
    assert _variables(model)[0] == []

    class FirstOnly(keras.Model):
        @property
        def trainable_variables(self):
            return super().trainable_variables[:1]

    custom = FirstOnly(inputs, keras.layers.Dense(2)(inputs))
    assert [v.path for v in _variables(custom)[0]] == [custom.trainable_variables[0].path]


def test_eager_first_and_compiled_later_checkups_agree_and_leave_the_model_alone(digits):
    """The first pass (eager on TensorFlow) and the compiled ones give the same statistics, and
    neither changes weights, batch-norm statistics or the dropout seed state."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.3, seed=1)(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    x, y = digits
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]
    tables = [gh.gradient_stats(model, x, y, loss=gh.models.classification_loss())
              for _ in range(4)]
    for table in tables[1:]:
        for col in ("grad_norm", "grad_max_abs", "grad_std", "weight_norm"):
            np.testing.assert_allclose(table[col], tables[0][col], rtol=1e-5)
    for v, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), value, v.path)


# --- accuracy at every scale ----------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(exponent=st.integers(-30, 30), seed=st.integers(0, 2**16))
def test_statistics_match_float64_reference_from_1e_minus_30_to_1e30(exponent, seed):
    model = _SCALE_MODEL
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 3)).astype("float32")
    y = rng.normal(size=(N, 4)).astype("float32")
    x[:, 0] = 0.0  # an exactly-zero kernel row: zero_fraction and dead units are exercised
    sw = np.full(N, 10.0**exponent, "float32")
    stats = gh.gradient_stats(model, x, y, loss="mse", sample_weight=sw)
    d = model.get_layer("d")
    gk, gb = mse_grads(x, numpy_of(d.kernel), numpy_of(d.bias), y, sample_weight=sw)
    for row, grad, weight in zip(stats.itertuples(), (gk, gb), (d.kernel, d.bias), strict=True):
        ref = tensor_stats(grad, numpy_of(weight))
        for col in STAT_COLUMNS:
            want, got = ref[col], getattr(row, col)
            if col == "grad_std":  # float32 two-pass variance: relative to the largest entry
                assert got == pytest.approx(want, rel=1e-5, abs=1e-6 * ref["grad_max_abs"])
            else:
                assert got == pytest.approx(want, rel=1e-5, abs=0, nan_ok=True), (col, exponent)


_SCALE_MODEL = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
    4, name="d", bias_initializer="glorot_uniform")])


# --- bad input: clear errors naming the argument ---------------------------------------------


@pytest.mark.parametrize("x,match", [
    ([XA], r"Argument `x` must hold one array per input.*2 inputs.*list of 1"),
    ({"a": XA, "c": XA}, r"Argument `x` must be keyed by the input names.*unknown: \['c'\]"),
    (XA, r"Argument `x` must hold one array per input"),
    ([XA, XA[:8]], r"Every array in argument `x`.*x\[1\].shape=\(8, 3\)"),
    ([XA, np.zeros((N, 4), "float32")], r"Argument `x\[1\]` has shape \(16, 4\)"),
])
def test_bad_multi_input_batches_name_the_argument(x, match):
    with pytest.raises(ValueError, match=match):
        gh.gradient_stats(single_output_two_inputs(), x, Y1, loss="mse")


def test_bad_structures_and_sources_give_value_or_type_errors():
    model = dense_model()
    with pytest.raises(ValueError, match=r"Argument `y` must be None when `x` is a dataset"):
        gh.checkup(model, Batches(), Y1)
    with pytest.raises(ValueError, match="empty data source"):
        gh.checkup(model, iter([]))
    with pytest.raises(ValueError, match=r"`x` and `sample_weight`.*same number"):
        gh.gradient_stats(model, XA, Y1, sample_weight=SW[:3])
    with pytest.raises(TypeError, match=r"Argument `x\['a'\]` must hold numbers"):
        gh.gradient_stats(single_output_two_inputs(), {"a": np.array(["s"] * N), "b": XA}, Y1,
                          loss="mse")
    with pytest.raises(ValueError, match=r"Argument `x\[0\]` contains 1 non-finite"):
        bad = XA.copy()
        bad[0, 0] = np.nan
        gh.gradient_stats(single_output_two_inputs(), [bad, XA], Y1, loss="mse")
    with pytest.raises(TypeError, match=r"Argument `loss\[1\]`.*Received: loss\[1\]=3"):
        gh.gradient_stats(two_input_model(), [XA, XB], [Y1, Y2], loss=["mse", 3])
    with pytest.raises(ValueError, match=r"Computing the loss.*one entry per model output"):
        gh.gradient_stats(two_input_model(), [XA, XB], [Y1, Y2, Y2], loss="mse")


_BAD_LEAVES = [np.array(["a"] * N), np.ones((N, 3), bool), np.zeros((0, 3), "float32"),
               np.full((N, 3), np.nan, "float32"), [[1.0, 2.0], [3.0]], None,
               np.zeros((N - 1, 3), "float32"), "text", 3.5, object()]
_BAD = st.sampled_from(_BAD_LEAVES)
_TWO_INPUTS = single_output_two_inputs()


@settings(max_examples=40, deadline=None)
@given(x=st.one_of(_BAD, st.lists(_BAD, min_size=1, max_size=3),
                   st.dictionaries(st.sampled_from(["a", "b", "c"]), _BAD, min_size=1,
                                   max_size=2)))
def test_any_bad_input_gives_a_value_or_type_error_naming_x(x):
    with pytest.raises((ValueError, TypeError), match="`x"):
        gh.gradient_stats(_TWO_INPUTS, x, Y1, loss="mse")
