"""One table of the facts about activations that every part of gradhealth quotes.

Which initializer goes with which activation, the gain behind it, and the derivative facts the
course teaches (sigmoid's 0.25 ceiling, tanh's slope 1 at zero) live here and nowhere else: the
activation catalog and recommender (:mod:`gradhealth.init.activations`), the treatment plan
(:mod:`gradhealth.treatment`), the robust model builders (:mod:`gradhealth.models`), the course's
exercise checkers and the numbers in ``lecture_notes.md`` (checked by a test) all read it.

The tanh question, decided once: **tanh pairs with Glorot (Xavier) uniform**. Glorot & Bengio
(2010) derived ``Var(W) = 2 / (n_in + n_out)`` for symmetric activations with unit slope at zero,
studying tanh (and softsign) networks; it is Keras' default kernel initializer. LeCun's
``1 / n_in`` (LeCun et al. 1998) keeps only the forward variance and is the one SELU needs
(Klambauer et al. 2017), so LeCun normal is kept for SELU alone. For a square layer the two
agree; they differ only in how they treat fan-out.

Plain Python: no Keras, no backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIVATION_FACTS",
    "ALIASES",
    "FAMILY_INITIALIZER",
    "INITIALIZER_SOURCES",
    "ActivationFacts",
    "activation_name",
    "facts",
    "matched_initializer",
]


@dataclass(frozen=True)
class ActivationFacts:
    """What the literature says about one activation.

    Attributes:
        name: Keras' name of the activation.
        family: ``"saturating"`` (sigmoid-like, derivative < 1 everywhere), ``"symmetric"``
            (tanh-like: zero-centred, slope 1 at 0, saturating), ``"rectifier"`` (slope ~1 on
            the right half, ~0 on the left), ``"self_normalizing"`` (SELU) or ``"linear"``.
        initializer: The Keras kernel initializer whose variance is derived for it.
        gain: The factor ``g`` in ``Var(W) = g / fan`` that keeps the signal's variance
            (1 for LeCun/Glorot, 2 for He).
        max_derivative: ``max_x f'(x)`` (sigmoid: 0.25, the source of vanishing gradients).
        derivative_at_zero: ``f'(0)``.
        zero_centred: Whether ``E[f(z)] = 0`` for a symmetric input (LeCun et al. 1998).
        source: The paper that introduced or analysed the activation.
        initializer_source: The paper that derived the paired initializer.
    """

    name: str
    family: str
    initializer: str
    gain: float
    max_derivative: float
    derivative_at_zero: float
    zero_centred: bool
    source: str
    initializer_source: str


_GLOROT = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks"
_HE = "He, Zhang, Ren & Sun 2015, Delving Deep into Rectifiers"
_LECUN_SELU = "Klambauer et al. 2017, Self-Normalizing Neural Networks (LeCun normal)"

FAMILY_INITIALIZER: dict[str, str] = {
    "saturating": "glorot_uniform",
    "symmetric": "glorot_uniform",
    "rectifier": "he_normal",
    "self_normalizing": "lecun_normal",
    "linear": "glorot_uniform",
}
"""The initializer each activation family pairs with."""

INITIALIZER_SOURCES: dict[str, str] = {
    "glorot_uniform": _GLOROT,
    "he_normal": _HE,
    "lecun_normal": _LECUN_SELU,
}
"""The paper behind each paired initializer."""

# GELU's maximum slope is 1.129 at x = 1.414 (a smooth rectifier overshoots 1); SiLU's 1.0998 at
# x = 2.40; mish's 1.0885 near 1.2 -- values of the closed-form derivatives, checked by the tests
# against the measured catalog.
_ROWS: tuple[tuple[Any, ...], ...] = (
    # name, family, max f', f'(0), zero-centred, source
    ("sigmoid", "saturating", 0.25, 0.25, False, "Rumelhart, Hinton & Williams 1986"),
    ("tanh", "symmetric", 1.0, 1.0, True, "LeCun et al. 1998, Efficient BackProp"),
    ("relu", "rectifier", 1.0, 0.0, False, "Glorot, Bordes & Bengio 2011"),
    ("leaky_relu", "rectifier", 1.0, 1.0, False, "Maas, Hannun & Ng 2013"),
    ("elu", "rectifier", 1.0, 1.0, False, "Clevert, Unterthiner & Hochreiter 2016"),
    ("selu", "self_normalizing", 1.0507009873554805 * 1.6732632423543772, 1.0507009873554805,
     True, "Klambauer et al. 2017"),
    ("gelu", "rectifier", 1.1289, 0.5, False, "Hendrycks & Gimpel 2016"),
    ("silu", "rectifier", 1.0998, 0.5, False, "Ramachandran, Zoph & Le 2017 (swish)"),
    ("mish", "rectifier", 1.0885, 0.6, False, "Misra 2019"),
    ("softplus", "rectifier", 1.0, 0.5, False, "Dugas et al. 2001"),
    ("relu6", "rectifier", 1.0, 0.0, False, "Krizhevsky 2010"),
    ("hard_silu", "rectifier", 1.5, 0.5, False, "Howard et al. 2019 (MobileNetV3)"),
    ("celu", "rectifier", 1.0, 1.0, False, "Barron 2017"),
    ("softsign", "symmetric", 1.0, 1.0, True, "Bergstra et al. 2009"),
    ("hard_sigmoid", "saturating", 1.0 / 6.0, 1.0 / 6.0, False, "Courbariaux et al. 2015"),
    ("linear", "linear", 1.0, 1.0, True, "identity"),
)

ACTIVATION_FACTS: dict[str, ActivationFacts] = {
    name: ActivationFacts(
        name=name, family=family, initializer=FAMILY_INITIALIZER[family],
        gain=2.0 if family == "rectifier" else 1.0, max_derivative=float(max_d),
        derivative_at_zero=float(d0), zero_centred=bool(centred), source=source,
        initializer_source=INITIALIZER_SOURCES[FAMILY_INITIALIZER[family]])
    for name, family, max_d, d0, centred, source in _ROWS
}
"""The table: activation name -> :class:`ActivationFacts`."""

ALIASES: dict[str, str] = {"swish": "silu", "leakyrelu": "leaky_relu", "hard_swish": "hard_silu"}
"""Other spellings of the same activations."""


def activation_name(activation: Any) -> str:
    """The table's name for an activation given as a name or a callable (``keras.activations.relu``).

    Args:
        activation: A name (any case, aliases accepted) or a function with a ``__name__``.

    Returns:
        The lower-case canonical name (unknown names are returned lower-cased, unchanged).
    """
    if isinstance(activation, str):
        name = activation.lower()
    else:
        name = str(getattr(activation, "__name__", type(activation).__name__)).lower()
    return ALIASES.get(name, name)


def facts(activation: Any) -> ActivationFacts | None:
    """The table's row for ``activation`` (name or callable), or None when it is not listed."""
    return ACTIVATION_FACTS.get(activation_name(activation))


def matched_initializer(activation: Any) -> str:
    """The Keras kernel initializer whose variance is derived for ``activation``.

    Args:
        activation: A Keras activation name or callable.

    Returns:
        ``"he_normal"`` for the ReLU family (ReLU, Leaky ReLU, ELU, GELU, Swish/SiLU, Mish),
        ``"lecun_normal"`` for SELU, ``"glorot_uniform"`` for tanh, sigmoid and anything the
        table does not list (Keras' default).

    Example:
        >>> matched_initializer("relu"), matched_initializer("tanh"), matched_initializer("selu")
        ('he_normal', 'glorot_uniform', 'lecun_normal')

    References:
        He, Zhang, Ren & Sun 2015, "Delving Deep into Rectifiers", ICCV.
        Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
        networks", AISTATS.
        Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-Normalizing Neural Networks".
    """
    row = facts(activation)
    return row.initializer if row is not None else "glorot_uniform"
