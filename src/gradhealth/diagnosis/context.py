"""What the model is: the facts the diagnosis needs to read its gradients like an expert.

:func:`model_context` walks every layer (nested custom layers and sub-models included) and
returns plain Python values:

- each weighted layer's **role** (how its gradient may be read, see
  :data:`gradhealth.core.diagnosis.ROLES`): an ordinary kernel, a kernel followed by
  normalization (scale-invariant: van Laarhoven 2017), an attention query/key projection (small
  at initialization by design: Xiong et al. 2020), a normalization layer, an embedding table, a
  recurrent cell, or a layer of vectors only;
- the **block** each layer belongs to along depth: a custom layer or sub-model as a whole, a
  segment of a residual network between two ``Add`` merges, else the layer itself;
- what the model already has, so that no recommendation proposes it: normalization layers
  (nested ones too), residual adds (``None`` = unknown, when custom layers hide their ``call``),
  the hidden activations and initializers, the compiled optimizer (or none) and its clipping;
- for embeddings, the rows the batch touched; for recurrent layers, the gradient reaching each
  timestep (:func:`gradhealth.adapters.probes.sequence_input_gradient`), measured only when the
  model has a recurrent layer.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from gradhealth.adapters.autodiff import compiled
from gradhealth.adapters.keras_compat import walk_layers
from gradhealth.adapters.probes import sequence_input_gradient
from gradhealth.core.knowledge import activation_name
from gradhealth.core.stats import robust_norm
from gradhealth.core.timeprofile import time_profile

__all__ = ["GATED_CELLS", "LAYER_SCALE", "MERGE_LAYERS", "NORMALIZATION_LAYERS",
           "PASSTHROUGH_LAYERS", "RECURRENT_CELLS", "RESIDUAL_LAYERS", "SCALE_FREE_ACTIVATIONS",
           "model_context"]

NORMALIZATION_LAYERS: tuple[str, ...] = ("BatchNormalization", "LayerNormalization",
                                         "GroupNormalization", "UnitNormalization",
                                         "RMSNormalization", "SpectralNormalization")
RESIDUAL_LAYERS: tuple[str, ...] = ("Add",)
MERGE_LAYERS: tuple[str, ...] = ("Add", "Concatenate", "Average", "Multiply", "Subtract",
                                 "Maximum", "Minimum")
#: Layers between a kernel and a normalization that keep the kernel scale-invariant: they are
#: positively homogeneous (f(a z) = a f(z) for a > 0), so scaling the kernel scales their output
#: and the normalization removes the scale.
PASSTHROUGH_LAYERS: tuple[str, ...] = ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                       "SpatialDropout3D", "ZeroPadding1D", "ZeroPadding2D",
                                       "ZeroPadding3D", "MaxPooling1D", "MaxPooling2D",
                                       "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
                                       "AveragePooling3D", "Reshape", "Flatten", "Permute",
                                       "Identity", "Cropping1D", "Cropping2D", "Activation",
                                       "ReLU", "LeakyReLU")
#: Activations that are positively homogeneous (see :data:`PASSTHROUGH_LAYERS`).
SCALE_FREE_ACTIVATIONS: frozenset[str] = frozenset({"linear", "relu", "leaky_relu"})
RECURRENT_CELLS: tuple[str, ...] = ("SimpleRNNCell", "LSTMCell", "GRUCell")
#: Cells whose path through time is gated (an additive memory the gates learn to keep open).
GATED_CELLS: tuple[str, ...] = ("LSTMCell", "GRUCell")
_EMBEDDINGS = ("Embedding",)
#: Layers that multiply a residual branch by a learnable per-channel scale, small at
#: initialization (ConvNeXt's and CaiT's ``LayerScale``: Touvron et al. 2021), matched by class
#: name: the gradients of every weight inside the branch are that scale times the stream's.
LAYER_SCALE = re.compile(r"layer_?scale", re.IGNORECASE)
# Structural facts per model, computed once: walking ResNet50's 177 layers each checkup would
# cost more than the statistics.
_STRUCTURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WEIGHTED_KINDS = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D",
                   "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose",
                   "Conv2DTranspose", "Conv3DTranspose")
_STANDARD_MODULE = "keras."


def _kind(layer: Any) -> str:
    return type(layer).__name__


def _act(layer: Any) -> str:
    fn = getattr(layer, "activation", None)
    return activation_name(fn) if fn is not None else "linear"


def _owners(layers: list[Any]) -> dict[int, Any]:
    """id(variable) -> the innermost layer that owns it.

    The variable's path names its layer (``lstm/lstm_cell/kernel`` belongs to ``lstm_cell``);
    among the layers that hold it, the one with that name wins, else the one with the fewest
    weights (the innermost).
    """
    owner: dict[int, Any] = {}
    rank: dict[int, tuple[int, int]] = {}
    for layer in layers:
        weights = layer.trainable_weights
        for v in weights:
            parts = str(getattr(v, "path", "")).split("/")
            named = len(parts) >= 2 and parts[-2] == layer.name
            key = (0 if named else 1, len(weights))
            if id(v) not in owner or key < rank[id(v)]:
                owner[id(v)], rank[id(v)] = layer, key
    return owner


def _flat(tensors: Any) -> list[Any]:
    return list(keras.tree.flatten(tensors)) if tensors is not None else []


def _graph_nodes(model: Any, layers: list[Any]) -> list[Any]:
    """The layers, plus the operations of functional graphs that are not layers: ``a + b`` in a
    functional model is an ``ops.add`` node (ConvNeXt's residual sums), which ``walk_layers``
    does not list."""
    nodes = list(layers)
    seen = {id(node) for node in nodes}
    for owner in [model, *layers]:
        for op in getattr(owner, "operations", None) or []:
            if id(op) not in seen and not isinstance(op, keras.layers.Layer):
                seen.add(id(op))
                nodes.append(op)
    return nodes


def _layer_scaled(nodes: list[Any], producers: dict[int, list[Any]],
                  consumers: dict[int, list[Any]]) -> set[int]:
    """id of every layer inside a residual branch that a :data:`LAYER_SCALE` layer multiplies.

    From each such layer, walks back along the branch (one producer at a time) until the node
    whose output also feeds something else: that is where the branch left the residual stream.
    """
    scaled: set[int] = set()
    for node in nodes:
        if not LAYER_SCALE.search(_kind(node)) or not isinstance(node, keras.layers.Layer):
            continue
        current = node
        for _ in range(32):  # a branch of a few dozen layers at most
            before = producers.get(id(current), [])
            if len(before) != 1 or len(consumers.get(id(before[0]), [])) != 1:
                break
            current = before[0]
            scaled.add(id(current))
    return scaled


def _edges(nodes: list[Any]) -> tuple[dict[int, list[Any]], dict[int, list[Any]]]:
    """``(producers, consumers)``: id(node) -> the nodes whose outputs it takes, and id(node) ->
    the nodes that take its output (functional graphs; empty where unknown)."""
    made_by: dict[int, Any] = {}
    for node in nodes:
        try:
            for t in _flat(node.output):
                made_by[id(t)] = node
        except (AttributeError, ValueError, RuntimeError):
            continue
    producers: dict[int, list[Any]] = {}
    consumers: dict[int, list[Any]] = {}
    for node in nodes:
        try:
            inputs = _flat(node.input)
        except (AttributeError, ValueError, RuntimeError):
            continue
        sources = [made_by[id(t)] for t in inputs
                   if id(t) in made_by and made_by[id(t)] is not node]
        producers[id(node)] = sources
        for src in sources:
            consumers.setdefault(id(src), []).append(node)
    return producers, consumers


def _scale_invariant(layer: Any, consumers: dict[int, list[Any]]) -> str | None:
    """The normalization layer that makes ``layer``'s kernel scale-invariant, or None."""
    if _act(layer) not in SCALE_FREE_ACTIVATIONS:
        return None
    current = layer
    for _ in range(8):  # a few pass-through layers at most
        nxt = consumers.get(id(current), [])
        if len(nxt) != 1:
            return None
        nxt_layer = nxt[0]
        kind = _kind(nxt_layer)
        if kind in NORMALIZATION_LAYERS:
            return nxt_layer.name
        if kind not in PASSTHROUGH_LAYERS or _act(nxt_layer) not in SCALE_FREE_ACTIVATIONS:
            return None
        current = nxt_layer
    return None


def _role(layer: Any, qk: set[int], scaled: set[int], consumers: dict[int, list[Any]]
          ) -> tuple[str, str]:
    kind = _kind(layer)
    if id(layer) in qk:
        return "attention_qk", ""
    if kind in NORMALIZATION_LAYERS:
        return "normalization", ""
    if kind in _EMBEDDINGS:
        return "embedding", ""
    if kind in RECURRENT_CELLS:
        return "recurrent", ""
    if not any(len(v.shape) >= 2 for v in layer.trainable_weights):
        return "vector", ""
    if id(layer) in scaled:
        return "layer_scaled", ""
    norm = _scale_invariant(layer, consumers)
    if norm is not None:
        return "scale_invariant", norm
    return "kernel", ""


def _optimizer_facts(model: Any) -> dict[str, Any]:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or isinstance(optimizer, str):
        return {"optimizer": None, "learning_rate": None, "clipping": None}
    lr = None
    try:
        value = optimizer.learning_rate
        try:
            lr = float(value)  # a scalar tensor of any backend; 0.4 ms less than NumPy's path
        except (TypeError, ValueError):
            lr = float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError, AttributeError):
        lr = None
    clip = [f"{name}={getattr(optimizer, name)}" for name in ("clipnorm", "global_clipnorm",
                                                              "clipvalue")
            if getattr(optimizer, name, None) is not None]
    inner = getattr(optimizer, "inner_optimizer", None) or getattr(optimizer, "optimizer", None)
    name = type(optimizer).__name__
    if inner is not None and not isinstance(inner, str):
        name = f"{name}({type(inner).__name__})"
        clip += [f"{n}={getattr(inner, n)}" for n in ("clipnorm", "global_clipnorm", "clipvalue")
                 if getattr(inner, n, None) is not None]
    if "Clipping" in name or "AutoClip" in name:
        clip.append(name)
    return {"optimizer": name, "learning_rate": lr, "clipping": ", ".join(clip) or None}


def _blocks(model: Any, top_of: Callable[[Any], Any]) -> tuple[dict[int, str], bool]:
    """id(top-level layer) -> block name; and whether the top level has residual adds."""
    top = list(getattr(model, "layers", []))
    has_add = any(_kind(layer) in RESIDUAL_LAYERS for layer in top)
    names: dict[int, str] = {}
    if not has_add:
        return {id(layer): layer.name for layer in top}, False
    pending: list[Any] = []
    for layer in top:
        pending.append(layer)
        if _kind(layer) in RESIDUAL_LAYERS:
            for p in pending:
                names[id(p)] = layer.name
            pending = []
    for p in pending:
        names[id(p)] = "head"
    return names, True


def _touched_rows(x: Any, grad: np.ndarray | None, n_rows: int, direct: bool
                  ) -> tuple[np.ndarray, str]:
    """The embedding rows this batch used, and how they were found."""
    rows = None
    source = "token ids in x"
    if direct and x is not None:
        ids = np.asarray(x)
        if np.issubdtype(ids.dtype, np.integer) and ids.size and ids.min() >= 0 and \
                ids.max() < n_rows:
            # np.unique sorts: 0.8 ms for 4096 ids on an H200's host, against a count per row.
            rows = np.flatnonzero(np.bincount(ids.reshape(-1), minlength=n_rows))
    if rows is None:
        source = "rows with a non-zero gradient"
        if grad is None:
            rows = np.arange(0)
        else:
            flat = np.asarray(grad).reshape(grad.shape[0], -1)
            rows = np.flatnonzero(np.any(flat != 0, axis=1))
    return rows, source


def _row_norm(table: Any, index: Any, valid: Any) -> Any:
    """The scaled L2 norm of the finite entries of ``table[index]`` where ``valid``."""
    ops = keras.ops
    picked = ops.take(table, ops.convert_to_tensor(index), axis=0)
    chosen = ops.where(ops.logical_and(ops.convert_to_tensor(valid), ops.isfinite(picked)),
                       ops.cast(picked, "float32"), 0.0)
    m = ops.max(ops.abs(chosen))
    scaled = chosen / ops.where(m > 0, m, 1.0)
    return m * ops.sqrt(ops.sum(scaled * scaled))


_ROW_NORM = compiled(_row_norm)


def _device_row_norm(variable: Any, rows: np.ndarray) -> float:
    """The L2 norm of the finite entries of ``variable[rows]``, computed where the variable lives.

    Only one number reaches the host: pulling a GPU embedding table to take a few rows (16 MB
    for 8000 x 512) cost a checkup as much as a training step. The rows are gathered in a
    power-of-two count, the padding masked out (JAX compiles once per count, and the number of
    rows changes from batch to batch; a gather keeps memory at the rows, not the table), in one
    compiled call where the backend dispatches each eager operation at a cost
    (:func:`gradhealth.adapters.autodiff.compiled`: on an H200, JAX's eight eager operations took
    3.8 ms of a 17 ms checkup). The norm is scaled by the largest magnitude, so it neither
    underflows nor overflows (as :func:`gradhealth.core.stats.robust_norm`, in float32).
    """
    n = int(rows.size)
    k = 1 << max(0, (n - 1).bit_length())
    index = np.zeros(k, dtype="int32")
    index[:n] = rows
    valid = np.zeros((k,) + (1,) * (len(variable.shape) - 1), dtype=bool)
    valid[:n] = True
    norm = _ROW_NORM(variable.value, index, valid)
    return float(keras.ops.convert_to_numpy(norm))


def _top_level_of(model: Any, layers: list[Any]) -> dict[int, Any]:
    top: dict[int, Any] = {}
    for t in getattr(model, "layers", []):
        top[id(t)] = t
        for inner in walk_layers(t):
            top.setdefault(id(inner), t)
    return top


def model_context(model: keras.Model, layer_names: list[str], x: Any = None, y: Any = None,
                  loss_fn: Callable | None = None, grads: list[Any] | None = None,
                  weights: list[np.ndarray] | None = None,
                  variables: list[Any] | None = None) -> dict[str, Any]:
    """Facts about the model that the diagnosis and the recommendations use (plain values).

    Args:
        model: The Keras model.
        layer_names: The statistics table's layer names (variable path prefixes), in order.
        x: The batch (for embedding rows and the per-timestep probe); optional.
        y: The targets (for the per-timestep probe); optional.
        loss_fn: The loss callable (for the per-timestep probe); optional.
        grads: The gradients, in ``model.trainable_variables`` order; optional.
        weights: The variables' values, same order; optional.
        variables: ``model.trainable_variables`` when the caller already has them; optional.

    Returns:
        A dict with ``model_name, backend, depth, activations, initializers,
        recurrent_initializers, roles, scale_invariant_by, blocks, has_normalization,
        normalization_layers, has_residual, custom_layers, n_params, optimizer, learning_rate,
        clipping, embedding_rows, time_profiles``. The structural facts are computed once per
        model (and recomputed when its layers or variables change).
    """
    variables = list(model.trainable_variables) if variables is None else list(variables)
    key = (tuple(layer_names), len(variables), len(getattr(model, "layers", [])))
    per_model = _STRUCTURE.setdefault(model, {})
    if key not in per_model:
        per_model.clear()
        per_model[key] = _structure(model, layer_names, variables)
    facts, embeddings, recurrent = per_model[key]
    embedding_rows: dict[str, dict[str, Any]] = {}
    for name, (_owner, i, direct) in embeddings.items():
        # Only the embedding tables are read here: the checkup's statistics were reduced on the
        # device, so no other weight reaches the host.
        n_rows = int(variables[i].shape[0])
        rows, source = _touched_rows(x, grads[i] if grads is not None else None, n_rows, direct)
        if not rows.size:
            norm = 0.0
        elif weights is not None:  # the gradients came to the host: so did the weights
            norm = robust_norm(np.asarray(weights[i])[rows])
        else:
            norm = _device_row_norm(variables[i], rows)
        embedding_rows[name] = {"rows": int(rows.size), "of": n_rows, "source": source,
                                "weight_norm": norm}
    return {
        "model_name": model.name,
        "backend": keras.backend.backend(),
        **{k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
           for k, v in facts.items()},  # copies: a caller may edit its report's context
        **_optimizer_facts(model),
        "embedding_rows": embedding_rows,
        "time_profiles": _time_profiles(model, recurrent, x, y, loss_fn),
    }


def _structure(model: Any, layer_names: list[str], variables: list[Any]
               ) -> tuple[dict[str, Any], dict[str, tuple[Any, int, bool]], dict[str, Any]]:
    """The facts that depend only on the model's structure (cached per model)."""
    layers = walk_layers(model)
    owners = _owners(layers)
    nodes = _graph_nodes(model, layers)
    producers, consumers = _edges(nodes)
    scaled = _layer_scaled(nodes, producers, consumers)
    qk: set[int] = set()
    for layer in layers:
        if _kind(layer) == "MultiHeadAttention":
            for attr in ("query_dense", "key_dense"):
                sub = getattr(layer, attr, None)
                if sub is not None:
                    qk.add(id(sub))
    top_of = _top_level_of(model, layers)
    block_names, top_residual = _blocks(model, top_of)
    by_layer: dict[str, list[int]] = {}
    for i, v in enumerate(variables):
        by_layer.setdefault(v.path.rsplit("/", 1)[0] if "/" in v.path else v.path, []).append(i)

    activations: dict[str, str] = {}
    initializers: dict[str, str] = {}
    recurrent_initializers: dict[str, str] = {}
    roles: dict[str, str] = {}
    normalized_by: dict[str, str] = {}
    blocks: dict[str, str] = {}
    embeddings: dict[str, tuple[Any, int, bool]] = {}
    recurrent: dict[str, Any] = {}
    model_inputs = {id(t) for t in _flat(getattr(model, "inputs", None))}
    for name in layer_names:
        idx = by_layer.get(name, [])
        owner = owners.get(id(variables[idx[0]])) if idx else None
        if owner is None:
            continue
        role, norm = _role(owner, qk, scaled, consumers)
        roles[name] = role
        if norm:
            normalized_by[name] = norm
        top = top_of.get(id(owner), owner)
        blocks[name] = block_names.get(id(top), top.name)
        act = _act(owner)
        if role in ("kernel", "scale_invariant", "recurrent") and act != "linear":
            activations[name] = act
        init = getattr(owner, "kernel_initializer", None)
        if init is not None:
            initializers[name] = type(init).__name__
        rinit = getattr(owner, "recurrent_initializer", None)
        if rinit is not None:
            recurrent_initializers[name] = type(rinit).__name__
        if role == "embedding":
            try:
                direct = any(id(t) in model_inputs for t in _flat(owner.input))
            except (AttributeError, ValueError, RuntimeError):
                direct = False
            embeddings[name] = (owner, idx[0], direct)
        if role == "recurrent":
            recurrent[name] = owner
    # An activation applied by a separate Activation layer counts for the layer feeding it.
    for layer in layers:
        nxt = consumers.get(id(layer), [])
        if len(nxt) == 1 and _kind(nxt[0]) in ("Activation", "ReLU", "LeakyReLU", "ELU",
                                               "PReLU", "Softmax"):
            for name in layer_names:
                if name.rsplit("/", 1)[-1] == layer.name and name not in activations:
                    activations[name] = _act(nxt[0]) if _kind(nxt[0]) == "Activation" else \
                        activation_name(_kind(nxt[0]))
    kinds = {_kind(node) for node in nodes}  # ``a + b`` nodes count as residual adds
    custom = sorted({_kind(layer) for layer in layers
                     if not type(layer).__module__.startswith(_STANDARD_MODULE)})
    has_residual: bool | None = bool(top_residual or kinds & set(RESIDUAL_LAYERS))
    if not has_residual and custom:
        has_residual = None  # a custom layer's call() may add a skip path we cannot see
    normalization_layers = sorted(layer.name for layer in layers
                                  if _kind(layer) in NORMALIZATION_LAYERS)
    facts = {
        "depth": len(layer_names),
        "activations": activations,
        "initializers": initializers,
        "recurrent_initializers": recurrent_initializers,
        "roles": roles,
        "scale_invariant_by": normalized_by,
        "blocks": blocks,
        "has_normalization": bool(normalization_layers),
        "normalization_layers": normalization_layers,
        "has_residual": has_residual,
        "custom_layers": custom,
        "n_params": int(sum(int(np.prod(v.shape)) for v in variables)),
    }
    return facts, embeddings, recurrent


def _time_profiles(model: Any, recurrent: dict[str, Any], x: Any, y: Any,
                   loss_fn: Callable | None) -> dict[str, dict[str, Any]]:
    """The gradient reaching each timestep of each top-level recurrent layer (first only)."""
    if not recurrent or x is None or y is None or loss_fn is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, cell in recurrent.items():
        rnn = _rnn_of(model, cell)
        if rnn is None:
            out[name] = {"measured": False, "cell": _kind(cell),
                         "why": "the recurrent layer is not a top-level layer of a functional "
                                "model, so its input sequence cannot be reached"}
            continue
        grad = sequence_input_gradient(model, rnn, x, y, loss_fn)
        if grad is None or np.ndim(grad) != 3:
            out[name] = {"measured": False, "cell": _kind(cell),
                         "why": "the model cannot be split at the recurrent layer's input"}
            continue
        per_step = [robust_norm(grad[:, t, :]) for t in range(grad.shape[1])]
        backwards = bool(getattr(getattr(rnn, "forward_layer", rnn), "go_backwards", False))
        profile = time_profile(per_step, reverse=backwards)
        out[name] = {"measured": True, "cell": _kind(cell), "layer": rnn.name,
                     "gated": _kind(cell) in GATED_CELLS,
                     "bidirectional": _kind(rnn) == "Bidirectional", **profile}
    return out


def _rnn_of(model: Any, cell: Any) -> Any:
    for layer in getattr(model, "layers", []):
        inner = getattr(layer, "forward_layer", layer)
        if getattr(inner, "cell", None) is cell:
            return layer
    return None
