"""The branch-free step (JAX on an accelerator): no conditional, the same numbers.

On a GPU XLA runs a conditional by reading its predicate on the host, so with
:func:`gradhealth.adapters.fused.branch_free` the monitor's statistics always take the two
exact passes, the guard is one ``all(isfinite)`` per gradient and a non-finite step is undone
with a select. Here the branch-free path is forced on the CPU (``fused.BRANCH_FREE = True``)
and checked three ways: no ``cond`` in the traced step, every statistic against float64 NumPy
from 1e-30 to 1e30, and a poisoned step skipped with the weights and optimizer state kept.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_monitor_ring import assert_step_matches, run_steps, scaled_gradients, values

from gradhealth.adapters import fused
from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning
from gradhealth.ops import stats as ops_stats

JAX = keras.backend.backend() == "jax"
BATCH = 16


@pytest.fixture
def forced():
    fused.BRANCH_FREE = True
    try:
        yield
    finally:
        fused.BRANCH_FREE = None


def make_model(optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Snapshots(keras.callbacks.Callback):
    """The weights and the inner optimizer's state after every step."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_train_batch_end(self, batch, logs=None):
        m = self.model  # on JAX, reading it syncs the state back into the variables
        self.states.append([keras.ops.convert_to_numpy(v.value) for v in
                            m.trainable_variables + m.optimizer.inner_optimizer.variables
                            if "iteration" not in v.path])


def primitives(jaxpr) -> set[str]:
    """Every primitive of a closed jaxpr, sub-jaxprs included."""
    found, todo = set(), [jaxpr.jaxpr]
    while todo:
        for eqn in todo.pop().eqns:
            found.add(eqn.primitive.name)
            params = list(eqn.params.values())
            while params:  # sub-jaxprs sit in params, alone or in tuples (cond's branches)
                value = params.pop()
                if isinstance(value, (tuple, list)):
                    params.extend(value)
                elif hasattr(value, "eqns"):
                    todo.append(value)
                elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
                    todo.append(value.jaxpr)
    return found


def test_only_jax_goes_branch_free(forced):
    assert fused.branch_free() is JAX
    kernels = fused.stats_kernels(ops_stats)
    assert getattr(kernels, "branch_free", False) is JAX
    fused.BRANCH_FREE = None
    if keras.backend.backend() != "jax":
        assert not fused.branch_free()
    else:  # decided by the device: this machine's JAX runs on its CPU
        import jax

        assert fused.branch_free() is (jax.default_backend() != "cpu")


def monitored_step_primitives() -> set[str]:
    """The primitives of a default monitor's traced ``stateless_apply`` (every=1, skip)."""
    import jax

    model = make_model()
    monitor = GradientHealthMonitor()
    monitor.set_model(model)
    monitor.on_train_begin()
    opt = model.optimizer
    tvs = [v.value for v in model.trainable_variables]
    grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    try:
        return primitives(jax.make_jaxpr(opt.stateless_apply)(
            [v.value for v in opt.variables], grads, tvs))
    finally:
        monitor.on_train_end()


@pytest.mark.skipif(not JAX, reason="the branch-free step is JAX's")
def test_the_monitored_step_holds_no_conditional(forced):
    """Default monitor settings (every=1, on_nonfinite="skip"): statistics, guard and skip."""
    names = monitored_step_primitives()
    assert "cond" not in names and "reduce_max" in names  # the statistics are in there
    fused.BRANCH_FREE = False  # and the default CPU step does branch
    assert "cond" in monitored_step_primitives()


@pytest.mark.skipif(not JAX, reason="the branch-free step is JAX's")
@pytest.mark.parametrize("kind", ["normal", "offset", "sparse"])
def test_branch_free_statistics_exact_from_1e_minus30_to_1e30(forced, kind):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    rng = np.random.default_rng(1)
    exponents = [-30, -20, -10, 0, 10, 20, 30]
    steps = [scaled_gradients(model, rng, e, kind) for e in exponents]
    steps[3][0][0, 0] = np.nan  # and a non-finite entry, counted and left out
    monitor = GradientHealthMonitor(every=1, buffer_steps=3, stats="all")
    with pytest.warns(GradientHealthWarning):  # the growth from 1e-30 to 1e30 is an alarm
        history = run_steps(monitor, model, steps)
    assert monitor.skipped_steps == [3]
    assert sorted(history.step.unique()) == list(range(len(exponents)))
    for i, grads in enumerate(steps):
        assert_step_matches(history[history.step == i], grads, values(model))


@pytest.mark.skipif(not JAX, reason="the branch-free step is JAX's")
@pytest.mark.parametrize("every", [1, 3])
def test_poisoned_step_is_undone_and_the_history_matches_the_branching_step(forced, every):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    x[20, 0] = np.inf  # step 1
    runs = {}
    for flag in (True, False):
        fused.BRANCH_FREE = flag
        model = make_model()
        monitor = GradientHealthMonitor(every=every)
        snapshots = Snapshots()  # the state right after the poisoned step equals that before
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[monitor, snapshots])
        for a, b in zip(snapshots.states[0], snapshots.states[1], strict=True):
            np.testing.assert_array_equal(a, b)
        assert monitor.skipped_steps == [1]
        runs[flag] = (monitor.history, snapshots.states[-1])
    (h_free, w_free), (h_cond, w_cond) = runs[True], runs[False]
    for a, b in zip(w_free, w_cond, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    cols = ["grad_norm", "grad_max_abs", "weight_norm"]
    np.testing.assert_allclose(h_free[cols].to_numpy(), h_cond[cols].to_numpy(), rtol=1e-5)
    assert list(h_free.status) == list(h_cond.status)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.one_of(
    st.just(float(np.finfo(np.float32).max)),
    st.floats(width=32, allow_nan=False, allow_infinity=False)),
                          st.sampled_from([None, np.nan, np.inf, -np.inf])),
                min_size=1, max_size=4))
def test_all_finite_is_exact_where_a_sum_overflows(specs):
    """Entries near float32's largest sum to inf; ``all_finite`` must still say finite."""
    arrays = []
    for size, value, poison in specs:
        a = np.full(size, value, "float32")
        if poison is not None:
            a[size // 2] = poison
        arrays.append(a)
    got = bool(keras.ops.convert_to_numpy(ops_stats.all_finite(
        [keras.ops.convert_to_tensor(a) for a in arrays])))
    assert got == all(np.isfinite(a).all() for a in arrays)


@pytest.mark.skipif(not JAX, reason="the branch-free step is JAX's")
def test_checkup_statistics_agree_with_the_branching_probe(forced):
    """The checkup's probe takes its kernels from the same switch (made once per backend)."""
    from gradhealth.diagnosis import gradient_stats
    from gradhealth.diagnosis import gradients as diag

    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32)
    tables = {}
    try:
        for flag in (True, False):
            fused.BRANCH_FREE = flag
            diag._device_stats.cache_clear()
            assert getattr(diag._device_stats("jax").keywords["kernels"], "branch_free",
                           False) is flag
            tables[flag] = gradient_stats(make_model(), x, y)
    finally:
        diag._device_stats.cache_clear()
    cols = ["grad_norm", "grad_mean_abs", "grad_max_abs", "grad_std", "weight_norm",
            "zero_fraction", "dead_unit_fraction"]
    np.testing.assert_allclose(tables[True][cols].to_numpy(float),
                               tables[False][cols].to_numpy(float), rtol=1e-5)
