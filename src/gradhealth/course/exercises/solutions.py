"""Self-checks for notebook 6, "Gradient Solutions Summary".

Each check computes the expected answer itself (from the library's rules or from the result the
student measured) and returns a :class:`~gradhealth.course.exercises.Feedback` saying whether the
answer is right and why, or giving a hint. Checks never raise on a malformed answer.

Example:
    >>> from gradhealth.course.exercises import solutions
    >>> print(solutions.check_matched_initializer("relu", "he_normal"))
    ✅ Correct (matched initializer): ...

References:
    He et al. 2015 (He initialization); Pascanu, Mikolov & Bengio 2013 (clipping);
    Kingma & Ba 2015 (Adam); He et al. 2016 (residual connections).
"""

from __future__ import annotations

from typing import Any

from gradhealth.core.knowledge import matched_initializer
from gradhealth.course.exercises._feedback import (
    Feedback,
    as_name,
    as_name_list,
    as_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)
from gradhealth.treatment import PRIORITY

__all__ = ["ACCURACY_TOLERANCE", "NUMERIC_TOLERANCE", "ORDER_EXERCISE", "check_best_optimizer", "check_clipped_norm",
           "check_matched_initializer", "check_treatment_order", "check_treatment_verified",
           "clipped_global_norm"]

NUMERIC_TOLERANCE: float = 1e-6
"""Relative tolerance for answers computed exactly (clipping arithmetic): float64 round-off."""

ACCURACY_TOLERANCE: float = 0.005
"""Absolute tolerance for an accuracy read off a table: half of the second decimal."""

ORDER_EXERCISE: tuple[str, ...] = ("clipping", "initializer", "activation", "learning_rate",
                                   "normalization")
"""The five treatments notebook 6's exercise 1 asks the student to order (shuffled on purpose)."""

_INITIALIZER_FAMILIES: dict[str, str] = {
    "glorot_uniform": "glorot", "glorot_normal": "glorot", "he_uniform": "he",
    "he_normal": "he", "lecun_uniform": "lecun", "lecun_normal": "lecun",
}


def check_treatment_order(answer: Any, items: Any = ORDER_EXERCISE) -> Feedback:
    """Is ``answer`` the treatments ``items`` ordered with causes before symptoms?

    Args:
        answer: A list of category names (or one comma-separated string), each from
            :data:`gradhealth.treatment.PRIORITY`, every one of ``items`` exactly once.
        items: The treatments the exercise asks to order (default: notebook 6's five).

    Returns:
        Feedback; right when the list holds every item once and follows
        :data:`~gradhealth.treatment.PRIORITY`. A wrong order is answered with one pair that is
        the wrong way round, never with the whole order.
    """
    name = "treatment order"
    wanted = as_name_list(items)
    if not wanted or any(w not in PRIORITY for w in wanted):
        return Feedback(False, f"`items` must be treatment categories from {list(PRIORITY)}; "
                        f"got {show(items)}.", name)
    if is_unanswered(answer):
        return not_answered(name)
    given = as_name_list(answer)
    if given is None:
        return Feedback(False, f"expected a list of category names, got {show(answer)}. Hint: "
                        f"write them as a list of strings, e.g. [\"{wanted[0]}\", ...].", name)
    unknown = [g for g in given if g not in wanted]
    if unknown:
        return Feedback(False, f"{unknown} {'is' if len(unknown) == 1 else 'are'} not among the "
                        f"treatments to order: {sorted(wanted)}.", name)
    if len(set(given)) != len(given):
        return Feedback(False, "each treatment appears once; your list repeats "
                        f"{sorted({g for g in given if given.count(g) > 1})}.", name)
    missing = [w for w in wanted if w not in given]
    if missing:
        return Feedback(False, f"your list leaves out {missing}: order all {len(wanted)} "
                        "treatments.", name)
    for earlier, later in zip(given, given[1:], strict=False):
        if PRIORITY[earlier] > PRIORITY[later]:
            return Feedback(False, f"not yet: you put {earlier!r} before {later!r}. Hint: which "
                            "of the two treats a cause and which a symptom, and would one make "
                            "the other unnecessary?", name)
    return Feedback(True, "causes first (the activation, then the initializer matched to it, "
                    "then the architecture), then optimization, and the clipping safety net "
                    "last.", name)


def check_matched_initializer(activation: str, answer: Any) -> Feedback:
    """Is ``answer`` the Keras initializer whose variance is derived for ``activation``?

    Args:
        activation: A Keras activation name (``"relu"``, ``"selu"``, ``"tanh"``, ...).
        answer: A Keras initializer name such as ``"he_normal"`` (the uniform/normal variant of
            the same rule is accepted: they have the same variance).

    Returns:
        Feedback comparing with :func:`gradhealth.core.knowledge.matched_initializer`.
    """
    name = "matched initializer"
    act = as_name(activation)
    if act is None:
        return Feedback(False, f"`activation` must be a name; got {show(activation)}.", name)
    expected = matched_initializer(act)
    if is_unanswered(answer):
        return not_answered(name)
    chosen = as_name(answer)
    if chosen is None:
        return Feedback(False, f"expected an initializer name such as \"glorot_uniform\", got "
                        f"{show(answer)}.", name)
    if chosen == expected or (chosen in _INITIALIZER_FAMILIES
                              and _INITIALIZER_FAMILIES[chosen]
                              == _INITIALIZER_FAMILIES.get(expected)):
        return Feedback(True, f"{chosen}: its variance is derived for {act} ({expected} in "
                        "gradhealth's table), so the signal keeps its variance through depth.",
                        name)
    return Feedback(False, f"{show(answer)} is not matched to {act}. Hint: does {act} zero half "
                    "of its input (a rectifier), normalize itself, or is it symmetric around 0? "
                    "Notebook 5's pairing table gives the rule for each kind.", name)


def clipped_global_norm(global_norm: float, threshold: float) -> float:
    """The global norm after clipping by global norm: ``min(global_norm, threshold)``.

    Args:
        global_norm: Norm of all gradients together before clipping (>= 0).
        threshold: The clipping limit (> 0).

    Returns:
        The norm after clipping.
    """
    return min(float(global_norm), float(threshold))


def check_clipped_norm(global_norm: float, threshold: float, answer: Any) -> Feedback:
    """Is ``answer`` the global gradient norm after clipping by global norm at ``threshold``?

    Args:
        global_norm: The norm before clipping.
        threshold: The clipping limit.
        answer: The student's norm after clipping.

    Returns:
        Feedback.
    """
    exercise = "clipped norm"
    norm, limit = as_number(global_norm), as_number(threshold)
    if norm is None or limit is None or norm < 0 or limit <= 0:
        return Feedback(False, "global_norm must be >= 0 and threshold > 0; got "
                        f"{show(global_norm)} and {show(threshold)}.", exercise)
    expected = clipped_global_norm(norm, limit)
    scale = expected / norm if norm > 0 else 1.0
    return check_close(
        exercise, answer, expected, NUMERIC_TOLERANCE,
        f"every gradient is multiplied by {scale:.3g}, so the direction is unchanged and the "
        f"norm becomes min({norm:g}, {limit:g}).",
        "Clipping by global norm rescales all gradients by one common factor; what must that "
        "factor be for the norm to end at the limit?")


def check_best_optimizer(comparison: Any, answer: Any) -> Feedback:
    """Is ``answer`` the optimizer with the best test accuracy in ``comparison``?

    Args:
        comparison: The :class:`gradhealth.course.optimizers.OptimizerComparison` the student read.
        answer: An optimizer name from its table (a one-element list is accepted).

    Returns:
        Feedback; ties on accuracy go to the fewest steps to the target loss.
    """
    name = "best optimizer"
    try:
        expected = str(comparison.best())
        table = comparison.table().set_index("optimizer")
    except (AttributeError, KeyError, TypeError, ValueError):
        return Feedback(False, "pass the comparison returned by compare_optimizers(...) as "
                        f"`comparison` (got {type(comparison).__name__}).", name)
    if is_unanswered(answer):
        return not_answered(name)
    chosen = as_name(answer)
    names = [str(n) for n in table.index]
    if chosen is None or chosen not in names:
        return Feedback(False, f"{show(answer)} is not in the table; choose one name from "
                        f"{names}.", name)
    if chosen == expected:
        acc = table.loc[expected, "test_accuracy"]
        return Feedback(True, f"{expected} reached test accuracy {acc:.3f} in this budget. One "
                        "run on one network: rerun with other seeds before calling it better.",
                        name)
    return Feedback(False, f"{chosen} reached {table.loc[chosen, 'test_accuracy']:.3f}; look at "
                    "the test_accuracy column for a higher one.", name)


def check_treatment_verified(result: Any, answer: Any) -> Feedback:
    """Did the student read the re-examination correctly?

    Args:
        result: The :class:`gradhealth.treatment.TreatmentResult` of ``treat``.
        answer: A pair ``(status, accuracy)``: the treated network's status after training and
            its test accuracy (two decimals are enough), as the student read them.

    Returns:
        Feedback.
    """
    name = "treatment verified"
    try:
        expected_status = str(result.after.status)
        measured = float(result.accuracy)
    except (AttributeError, TypeError, ValueError):
        return Feedback(False, "pass the result returned by treat(...) as `result` (got "
                        f"{type(result).__name__}).", name)
    if is_unanswered(answer):
        return not_answered(name)
    if isinstance(answer, str) or not isinstance(answer, (list, tuple)) or len(answer) != 2:
        return Feedback(False, f"expected a pair (status, accuracy), got {show(answer)}. Hint: "
                        "e.g. (\"vanishing\", 0.12).", name)
    status, accuracy = answer
    if as_name(status) != expected_status:
        return Feedback(False, f"the status after treatment is not {show(status)}: look at "
                        "result.after.status (or the summary table's last row).", name)
    value = as_number(accuracy)
    if value is None:
        return Feedback(False, f"expected a number for the accuracy, got {show(accuracy)}.", name)
    if abs(value - measured) > ACCURACY_TOLERANCE:
        return Feedback(False, f"{value:g} is not the measured accuracy; read result.accuracy.",
                        name)
    return Feedback(True, f"'{expected_status}' at accuracy {measured:.2f}: the second "
                    "checkup confirms the treatment worked.", name)
