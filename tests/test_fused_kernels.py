"""The backend kernels' conditional: one branch runs, and TensorFlow keeps it a function call."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.adapters.fused import stats_kernels
from gradhealth.ops import stats as ops_stats


def test_eager_cond_runs_only_the_branch_taken():
    kernels = stats_kernels(ops_stats)
    calls = []

    def branch(name, value):
        def run():
            calls.append(name)
            return keras.ops.convert_to_tensor(value)
        return run

    assert float(kernels.cond(keras.ops.convert_to_tensor(True), branch("t", 1.0),
                              branch("f", 2.0))) == 1.0
    assert float(kernels.cond(False, branch("t", 1.0), branch("f", 2.0))) == 2.0
    assert calls == ["t", "f"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph detail")
def test_tensorflow_graph_conditionals_are_not_lowered_to_switch_merge():
    """Lowered, the executor walks every op of the untaken exact-statistics branch each step."""
    import tensorflow as tf

    kernels = stats_kernels(ops_stats)
    grads = [tf.constant(np.ones((4, 3), "float32")), tf.constant(np.ones(3, "float32"))]

    @tf.function(autograph=False)
    def step(gs):
        return ops_stats.device_stats(gs, gs, kernels=kernels), kernels.finite_guard(gs)

    graph = step.get_concrete_function(grads).graph
    ifs = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert len(ifs) == 2
    assert all(op.get_attr("_lower_using_switch_merge") is False for op in ifs)
    table, finite = step(grads)
    assert bool(finite) and np.allclose(table.numpy()[:, 0], [np.sqrt(12.0), np.sqrt(3.0)])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph detail")
def test_skip_conditional_is_one_function_call_and_skips():
    """The monitor's "apply or skip" has no outputs, so its If op is found by what the call added;
    lowered, it made a step at every=100 1.04x an unmonitored one (tf_graph's docstring)."""
    import tensorflow as tf

    from gradhealth.adapters.distribute import cond_on_replicas

    v = keras.Variable(np.zeros(3, "float32"))

    def add(g):
        v.assign_add(g)

    @tf.function(autograph=False)
    def step(flag, g):
        cond_on_replicas(flag, add, g)
        return v.value + 0.0

    g = tf.constant(np.ones(3, "float32"))
    graph = step.get_concrete_function(tf.constant(True), g).graph
    ifs = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert len(ifs) == 1 and ifs[0].get_attr("_lower_using_switch_merge") is False
    np.testing.assert_array_equal(step(tf.constant(True), g).numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(step(tf.constant(False), g).numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(step(tf.constant(True), g).numpy(), [2.0, 2.0, 2.0])
    # A concrete predicate branches in Python: no graph, one branch.
    cond_on_replicas(False, add, g)
    np.testing.assert_array_equal(v.numpy(), [2.0, 2.0, 2.0])


_SPECIALS = st.sampled_from([np.nan, np.inf, -np.inf])


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 9), max_size=3).map(tuple), min_size=1,
                       max_size=5),
       exponent=st.integers(-45, 37), seed=st.integers(0, 2 ** 31 - 1),
       special=st.one_of(st.none(), _SPECIALS))
def test_finite_guard_flags_any_nan_or_inf_and_leaves_every_value_as_it_was(
        shapes, exponent, seed, special):
    """The guard the monitor runs on unlogged steps: right flag, gradients untouched bit for bit
    (torch's fused check multiplies them in place by 1.0; subnormals from 1e-45 must survive)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(rng.normal(size=s) * 10.0 ** exponent, dtype="float32") for s in shapes]
    sized = [a for a in arrays if a.size]
    if special is not None and sized:
        target = sized[rng.integers(len(sized))].reshape(-1)
        target[rng.integers(target.size)] = special
    expected = all(np.isfinite(a).all() for a in arrays)
    grads = [keras.ops.convert_to_tensor(a) for a in arrays]
    guard = stats_kernels(ops_stats).finite_guard
    for recording in _autograd_modes():  # torch: the optimizer's no_grad (fused), and outside
        with recording:
            flag = guard(grads)
        assert bool(keras.ops.convert_to_numpy(flag)) == expected
        for a, g in zip(arrays, grads, strict=True):
            assert keras.ops.convert_to_numpy(g).view("uint32").tolist() == \
                a.view("uint32").tolist()


def _autograd_modes() -> list:
    if keras.backend.backend() != "torch":
        return [contextlib.nullcontext()]
    import torch

    return [torch.no_grad(), contextlib.nullcontext()]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's fused check")
def test_torch_guard_falls_back_where_the_fused_check_is_missing(monkeypatch):
    """A torch build or device without `_amp_foreach_non_finite_check_and_unscale_` (older CPU
    builds had it on CUDA only) gets the per-tensor extremes, once and from then on."""
    import torch

    from gradhealth.adapters import torch_kernels

    calls = []

    def missing(*args):
        calls.append(args)
        raise NotImplementedError("no CPU kernel for this op")

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", missing)
    monkeypatch.setattr(torch_kernels, "_FUSED_CHECK", {})
    finite = [torch.ones(3, 2), torch.zeros(4)]
    broken = [torch.ones(3, 2), torch.tensor([0.0, float("nan")])]
    with torch.no_grad():  # where the fused check is tried
        assert bool(torch_kernels.finite_guard(finite))
        assert not bool(torch_kernels.finite_guard(broken))
    assert len(calls) == 1 and torch_kernels._FUSED_CHECK == {"cpu": False}


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's in-place counters")
@settings(max_examples=40, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=12))
def test_torch_count_step_counts_alike_from_a_bool_and_from_a_tensor(flags):
    """`count_step` takes the CPU guard's Python bool (two in-place additions) or a GPU's
    tensor flag (arithmetic, no host read): both give the counters a plain loop gives."""
    import torch

    from gradhealth.adapters import torch_kernels

    runs = {}
    for kind in (bool, torch.tensor):
        counters, step_counter = torch.zeros(3), torch.zeros((), dtype=torch.int32)
        for step, ok in enumerate(flags):
            torch_kernels.count_step(counters, step_counter, kind(ok), step)
        runs[kind] = (counters.tolist(), int(step_counter))
    bad = [step for step, ok in enumerate(flags) if not ok]
    expected = ([float(len(flags)), float(len(bad)), float(bad[-1] if bad else 0)], len(flags))
    assert runs[bool] == runs[torch.tensor] == expected


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's guard")
def test_torch_guard_reads_its_flag_on_the_host_only_on_the_cpu():
    """On the CPU the flag is a Python bool (nothing to wait for); a tensor elsewhere (here
    torch's meta device), so a GPU step is not made to wait for its host."""
    import torch

    from gradhealth.adapters import torch_kernels

    with torch.no_grad():
        assert torch_kernels.finite_guard([torch.ones(2)]) is True
        assert torch_kernels.finite_guard([torch.tensor([1.0, float("inf")])]) is False
    meta = torch.ones(2, device="meta") == 1
    assert torch_kernels.settled(meta) is meta
    assert torch_kernels.settled(torch.tensor(False)) is False
