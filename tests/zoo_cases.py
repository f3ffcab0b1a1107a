"""The labelled diagnosis zoo: standard models at their default initialization, each with the
verdict an expert gives it and where that verdict comes from.

Shared by ``tests/test_zoo.py`` (fast cases on every backend, heavy ones marked slow) and
``benchmarks/diagnosis_zoo.py`` (every case, a table per backend). Each builder returns
``(model, x, y, loss)`` built from fixed seeds; nothing downloads (``weights=None``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

import gradhealth as gh

__all__ = ["CASES", "Case", "TokenAndPositionEmbedding", "TransformerBlock", "case"]

layers = keras.layers


@dataclass(frozen=True)
class Case:
    """One labelled model.

    Attributes:
        name: Short id.
        expected: The verdict (``checkup(...).status``) an expert gives at this initialization.
        build: ``() -> (model, x, y, loss)``.
        source: Paper or common practice behind the expected verdict.
        names: Substrings of layer names the findings must mention (pathological cases).
        through_time: The verdict is about the gradient through time (needs the profile).
        slow: Heavy (keras.applications): marked slow in the tests.
    """

    name: str
    expected: str
    build: Callable[[], tuple[keras.Model, np.ndarray, np.ndarray, Any]]
    source: str
    names: tuple[str, ...] = ()
    through_time: bool = False
    slow: bool = False


def _ce() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _digits(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    return gh.data.digits_batch(n)


def _tokens(n: int, maxlen: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, maxlen)).astype("int32")
    y = rng.integers(0, 2, size=n).astype("int32")
    return x, y


# --- the keras-io text-classification transformer, verbatim in structure --------------------
# (https://keras.io/examples/nlp/text_classification_with_transformer/): its LayerNormalization
# layers and residual sums live inside a custom layer, invisible to ``model.layers``.

class TransformerBlock(layers.Layer):
    """keras-io's post-LN transformer block: attention + residual + LayerNorm, FFN + residual +
    LayerNorm, all created in ``__init__`` of a custom layer."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, rate: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"),
                                     layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs: Any, training: bool = False) -> Any:
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    """keras-io's token + position embedding."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x: Any) -> Any:
        maxlen = keras.ops.shape(x)[-1]
        positions = self.pos_emb(keras.ops.arange(start=0, stop=maxlen, step=1))
        return self.token_emb(x) + positions


def keras_io_transformer(blocks: int = 1, maxlen: int = 32, vocab: int = 2000):
    keras.utils.set_random_seed(0)
    inputs = layers.Input(shape=(maxlen,), dtype="int32")
    h = TokenAndPositionEmbedding(maxlen, vocab, 32)(inputs)
    for _ in range(blocks):
        h = TransformerBlock(32, 2, 32)(h)
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dropout(0.1)(h)
    h = layers.Dense(20, activation="relu")(h)
    h = layers.Dropout(0.1)(h)
    outputs = layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs, name=f"keras_io_transformer_{blocks}")
    x, y = _tokens(64, maxlen, vocab)
    return model, x, y, "sparse_categorical_crossentropy"


def functional_transformer(blocks: int, pre_ln: bool, maxlen: int = 32, vocab: int = 1000,
                           dim: int = 32, heads: int = 2):
    """Encoder as in Vaswani et al. 2017 (post-LN) or Xiong et al. 2020 (pre-LN), GELU FFN."""
    keras.utils.set_random_seed(1)
    inputs = layers.Input(shape=(maxlen,), dtype="int32")
    h = layers.Embedding(vocab, dim, name="tokens")(inputs)
    for b in range(1, blocks + 1):
        a = layers.LayerNormalization(name=f"b{b}_ln1")(h) if pre_ln else h
        a = layers.MultiHeadAttention(heads, dim // heads, name=f"b{b}_attention")(a, a)
        h = layers.Add(name=f"b{b}_add1")([h, a])
        if not pre_ln:
            h = layers.LayerNormalization(name=f"b{b}_ln1")(h)
        f = layers.LayerNormalization(name=f"b{b}_ln2")(h) if pre_ln else h
        f = layers.Dense(2 * dim, activation="gelu", name=f"b{b}_ffn1")(f)
        f = layers.Dense(dim, name=f"b{b}_ffn2")(f)
        h = layers.Add(name=f"b{b}_add2")([h, f])
        if not pre_ln:
            h = layers.LayerNormalization(name=f"b{b}_ln2")(h)
    if pre_ln:
        h = layers.LayerNormalization(name="final_ln")(h)
    h = layers.GlobalAveragePooling1D()(h)
    outputs = layers.Dense(2, name="classifier")(h)
    name = f"{'pre' if pre_ln else 'post'}_ln_transformer_{blocks}"
    model = keras.Model(inputs, outputs, name=name)
    x, y = _tokens(64, maxlen, vocab, seed=1)
    return model, x, y, _ce()


def resnet50():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10,
                                        classifier_activation=None)
    rng = np.random.default_rng(0)
    return (model, rng.normal(size=(8, 64, 64, 3)).astype("float32"),
            rng.integers(0, 10, size=8), _ce())


def mobilenet_v2():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10,
                                           classifier_activation=None)
    rng = np.random.default_rng(0)
    return (model, rng.normal(size=(8, 64, 64, 3)).astype("float32"),
            rng.integers(0, 10, size=8), _ce())


def recurrent(kind: str, length: int = 40):
    keras.utils.set_random_seed(2)
    rnn = {"lstm": layers.LSTM, "gru": layers.GRU}[kind]
    inputs = layers.Input(shape=(length, 8))
    h = rnn(32, name=kind)(inputs)
    outputs = layers.Dense(2, name="classifier")(h)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, length, 8)).astype("float32")
    y = (x[:, -5:, 0].sum(axis=1) > 0).astype("int32")
    return keras.Model(inputs, outputs, name=f"{kind}_{length}"), x, y, _ce()


def lstm_text(length: int = 50, vocab: int = 1000):
    keras.utils.set_random_seed(3)
    inputs = layers.Input(shape=(length,), dtype="int32")
    h = layers.Embedding(vocab, 16, name="tokens")(inputs)
    h = layers.LSTM(32, name="lstm")(h)
    outputs = layers.Dense(2, name="classifier")(h)
    x, y = _tokens(64, length, vocab, seed=3)
    return keras.Model(inputs, outputs, name=f"lstm_text_{length}"), x, y, _ce()


def simple_rnn_long(length: int = 160):
    """Only the first timestep decides the label: the textbook long-range dependency."""
    keras.utils.set_random_seed(4)
    inputs = layers.Input(shape=(length, 1))
    h = layers.SimpleRNN(32, name="simple_rnn")(inputs)
    outputs = layers.Dense(2, name="classifier")(h)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, length, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    return keras.Model(inputs, outputs, name=f"simple_rnn_{length}"), x, y, _ce()


def embedding_text(vocab: int = 5000, maxlen: int = 40):
    keras.utils.set_random_seed(5)
    inputs = layers.Input(shape=(maxlen,), dtype="int32")
    h = layers.Embedding(vocab, 16, name="tokens")(inputs)
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dense(16, activation="relu", name="hidden")(h)
    outputs = layers.Dense(2, name="classifier")(h)
    x, y = _tokens(64, maxlen, vocab, seed=5)
    return keras.Model(inputs, outputs, name="embedding_text"), x, y, _ce()


def cnn_batchnorm(blocks: int = 6):
    keras.utils.set_random_seed(6)
    inputs = layers.Input(shape=(16, 16, 3))
    h = inputs
    for b in range(1, blocks + 1):
        h = layers.Conv2D(16, 3, padding="same", name=f"conv{b}")(h)
        h = layers.BatchNormalization(name=f"bn{b}")(h)
        h = layers.Activation("relu", name=f"relu{b}")(h)
    h = layers.GlobalAveragePooling2D()(h)
    outputs = layers.Dense(10, name="classifier")(h)
    rng = np.random.default_rng(6)
    return (keras.Model(inputs, outputs, name="cnn_batchnorm"),
            rng.normal(size=(32, 16, 16, 3)).astype("float32"), rng.integers(0, 10, size=32),
            _ce())


def sigmoid_cnn(depth: int = 12):
    keras.utils.set_random_seed(7)
    inputs = layers.Input(shape=(16, 16, 3))
    h = inputs
    for b in range(1, depth + 1):
        h = layers.Conv2D(16, 3, padding="same", activation="sigmoid", name=f"conv{b}")(h)
    h = layers.GlobalAveragePooling2D()(h)
    outputs = layers.Dense(10, name="classifier")(h)
    rng = np.random.default_rng(7)
    return (keras.Model(inputs, outputs, name=f"sigmoid_cnn_{depth}"),
            rng.normal(size=(32, 16, 16, 3)).astype("float32"), rng.integers(0, 10, size=32),
            _ce())


def mlp(kind: str):
    x, y = _digits()
    return gh.models.demo_network(kind), x, y, _ce()


def dead_relu(bias: float = -10.0):
    """ReLU MLP whose hidden biases start at -10: every pre-activation is negative."""
    x, y = _digits()
    model = gh.models.deep_mlp(6, 64, "relu", "he_normal", input_dim=64, num_classes=10, seed=0,
                               name="dead_relu_6")
    for layer in model.layers[1:-1]:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.full(layer.bias.shape, bias, dtype="float32"))
    return model, x, y, _ce()


def nan_after_huge_lr(steps: int = 30):
    """Plain SGD at learning rate 1e4 on a small ReLU MLP: the loss turns NaN in a few steps."""
    x, y = _digits()
    model = gh.models.deep_mlp(4, 64, "relu", "he_normal", input_dim=64, num_classes=10,
                               seed=0, name="huge_lr_mlp")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e4), loss=_ce())
    for _ in range(steps):
        loss = float(np.asarray(model.train_on_batch(x, y)))
        if not np.isfinite(loss):
            break
    return model, x, y, _ce()


CASES: tuple[Case, ...] = (
    Case("relu_he_mlp_30", "healthy", lambda: mlp("relu"), "He et al. 2015 (He init keeps the "
         "ReLU gain at 1)"),
    Case("keras_io_transformer", "healthy", lambda: keras_io_transformer(2),
         "keras-io text classification with Transformer; Xiong et al. 2020"),
    Case("post_ln_transformer_2", "healthy", lambda: functional_transformer(2, pre_ln=False),
         "Vaswani et al. 2017; Xiong et al. 2020 (small Q/K gradients at init are normal)"),
    Case("pre_ln_transformer_4", "healthy", lambda: functional_transformer(4, pre_ln=True),
         "Xiong et al. 2020 (pre-LN keeps gradient norms constant across layers)"),
    Case("lstm_40", "healthy", lambda: recurrent("lstm", 40), "Hochreiter & Schmidhuber 1997"),
    Case("gru_40", "healthy", lambda: recurrent("gru", 40), "Cho et al. 2014"),
    Case("lstm_text_50", "healthy", lambda: lstm_text(50), "Hochreiter & Schmidhuber 1997"),
    Case("embedding_text", "healthy", embedding_text, "common practice (fastText-style bag of "
         "embeddings)"),
    Case("cnn_batchnorm", "healthy", cnn_batchnorm, "Ioffe & Szegedy 2015"),
    Case("sigmoid_mlp_30", "vanishing", lambda: mlp("sigmoid"), "Glorot & Bengio 2010",
         names=("hidden_1",)),
    Case("sigmoid_cnn_12", "vanishing", sigmoid_cnn, "Glorot & Bengio 2010", names=("conv1",)),
    Case("relu_normal1_mlp", "exploding", lambda: mlp("exploding"), "He et al. 2015 (gain "
         "sqrt(width/2) per layer)", names=("hidden_1",)),
    Case("dead_relu_bias", "dead", dead_relu, "Lu et al. 2019, Dying ReLU and Initialization",
         names=("hidden_",)),
    Case("huge_lr_nan", "nonfinite", nan_after_huge_lr, "Goodfellow et al. 2016, sec. 8.2"),
    Case("simple_rnn_160", "vanishing", simple_rnn_long, "Bengio, Simard & Frasconi 1994; "
         "Pascanu, Mikolov & Bengio 2013", names=("simple_rnn",), through_time=True),
    Case("resnet50", "healthy", resnet50, "He et al. 2016; van Laarhoven 2017", slow=True),
    Case("mobilenet_v2", "healthy", mobilenet_v2, "Sandler et al. 2018; van Laarhoven 2017",
         slow=True),
)


def case(name: str) -> Case:
    """The zoo case called ``name``."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)
