"""The experiment grid spread over processes and a Dask cluster gives the in-process table.

``grid(executor=...)`` takes any ``concurrent.futures.Executor``: a process pool on one machine,
or ``distributed.Client(...).get_executor()`` to spread a sweep over the machines of a Dask
cluster. Both are checked here against the same grid run in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import distributed
import pandas as pd
import pytest

from gradhealth.course import experiments as E
from gradhealth.data import digits_batch

SMALL = dict(activations=["tanh", "relu"], initializers=["he_normal"], depths=[2, 3], seeds=[0],
             width=8, progress=False)


@pytest.fixture(scope="module")
def data():
    return digits_batch(32)


@pytest.fixture(scope="module")
def here(data):
    x, y = data
    return E.grid(x=x, y=y, **SMALL)


def _worker_env() -> dict[str, str]:
    # Workers are fresh interpreters: they read KERAS_BACKEND and the quiet-TensorFlow settings
    # from the environment, like this process did.
    return {k: v for k, v in os.environ.items()
            if k in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}


@pytest.mark.slow  # a process pool of the course grid: TensorFlow run only
def test_process_pool_gives_the_in_process_table(here, data):
    x, y = data
    spawn = multiprocessing.get_context("spawn")  # fork after TensorFlow/JAX start is unsafe
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        spread = E.grid(x=x, y=y, executor=pool, **SMALL)
    pd.testing.assert_frame_equal(spread, here, rtol=1e-6)


@pytest.mark.slow  # starts a two-process Dask cluster: TensorFlow run only
def test_dask_cluster_executor_gives_the_in_process_table(here, data):
    x, y = data
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, env=_worker_env())
    with cluster, distributed.Client(cluster) as client:
        spread = E.grid(x=x, y=y, executor=client.get_executor(), **SMALL)
    pd.testing.assert_frame_equal(spread, here, rtol=1e-6)
