"""An optimizer that transforms the gradients, then lets another optimizer apply them.

The base of :class:`gradhealth.optim.ClippingOptimizer` and
:class:`gradhealth.optim.MonitoringOptimizer`, built the way Keras' own ``LossScaleOptimizer``
wraps an optimizer.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from gradhealth.adapters import distribute
from gradhealth.adapters.fused import branch_free
from gradhealth.adapters.keras_compat import optimizer_own_variables
from gradhealth.ops import control

__all__ = ["GradientWrapperOptimizer", "resolve_optimizer"]


def resolve_optimizer(optimizer: Any, argument: str = "optimizer") -> keras.optimizers.Optimizer:
    """Accept a Keras optimizer instance or name (``"adam"``); raise a clear error otherwise."""
    if isinstance(optimizer, str):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as e:
            raise ValueError(
                f"Argument `{argument}` is not a known Keras optimizer name (e.g. 'adam', 'sgd'). "
                f"Received: {argument}={optimizer!r}"
            ) from e
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"Argument `{argument}` must be a keras.optimizers.Optimizer instance or name. "
            f"Received: {argument}={optimizer!r} (of type {type(optimizer).__name__})"
        )
    return optimizer


class GradientWrapperOptimizer(keras.optimizers.Optimizer):
    """Base class: an optimizer that transforms gradients, then lets another optimizer apply them.

    Built the way Keras' ``LossScaleOptimizer`` wraps an optimizer, so it works inside the
    compiled train step of every backend: ``apply`` (TensorFlow ``tf.function``, torch) and
    ``stateless_apply`` (JAX ``jit``) both call :meth:`transform`, which may read and assign this
    wrapper's own variables (created in :meth:`build_own`). The learning rate, iteration count,
    loss scaling and configuration belong to the inner optimizer.

    Args:
        optimizer: The optimizer that applies the updates (instance or name).
        skip_nonfinite: When True, a step whose gradients hold NaN/inf is not applied at all
            (weights and the inner optimizer's state are left unchanged).
        name: Optimizer name.
    """

    def __init__(self, optimizer: Any, skip_nonfinite: bool = False,
                 name: str | None = None) -> None:
        optimizer = resolve_optimizer(optimizer)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.skip_nonfinite = bool(skip_nonfinite)
        # True while :meth:`stateless_apply` runs: variables then read the values handed in,
        # which a subclass must not write in place.
        self._in_stateless_apply = False

    #: When True the wrapper is invisible in saved models and checkpoints: ``save_own_variables``
    #: and ``load_own_variables`` are the inner optimizer's. Set by wrappers that gradhealth
    #: installs on a model for the length of a ``fit`` (the model's compile config still names
    #: the user's optimizer, so its variables are what a checkpoint must hold).
    transparent: bool = False

    # -- hooks ---------------------------------------------------------------------------------
    def build_own(self, var_list: list[Any]) -> None:
        """Create this wrapper's own variables (none by default)."""

    #: Subclasses that need the "all gradients finite" flag set this, so it is computed once
    #: per step and shared with the skip-on-NaN logic rather than reduced twice.
    needs_finite: bool = False

    def transform(self, grads: list[Any], weights: list[Any], finite: Any = None) -> list[Any]:
        """Return the gradients to apply; may assign this wrapper's variables.

        ``finite`` is the boolean "every gradient entry is finite" tensor when the wrapper
        skips non-finite steps or sets :attr:`needs_finite`, else None.
        """
        return grads

    # -- Keras optimizer API --------------------------------------------------------------------
    def build(self, var_list: list[Any]) -> None:
        # One copy per replica under tf.distribute, as the inner optimizer's own variables:
        # every replica computes the same values (from the summed gradient) into its copy.
        with distribute.variable_scope_like(self.inner_optimizer):
            self.build_own(list(var_list))
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self) -> list[Any]:
        return optimizer_own_variables(self) + self.inner_optimizer.variables

    @staticmethod
    def all_finite(grads: list[Any]) -> Any:
        """A boolean scalar tensor: every entry of every (non-None) gradient is finite."""
        flags = [ops.all(ops.isfinite(g)) for g in grads if g is not None]
        return ops.all(ops.stack(flags)) if flags else ops.convert_to_tensor(True)

    def reads_weights(self) -> bool:
        """Whether this step's :meth:`finite_flag` and :meth:`transform` look at the weights
        (True by default). Where it is False, :meth:`apply` hands them an empty list instead of
        reading every variable's value: on torch, whose step runs eagerly, reading them costs
        about 1.7 us a variable a step."""
        return True

    def finite_flag(self, grads: list[Any], weights: list[Any]) -> Any:
        """The "every gradient entry finite" flag of this step (:meth:`all_finite` by default;
        a subclass may compute it together with its own statistics of ``grads`` and
        ``weights``)."""
        return self.all_finite(grads)

    def _skips(self) -> bool:
        # A LossScaleOptimizer must see non-finite steps itself (it lowers its scale then).
        return self.skip_nonfinite and not isinstance(
            self.inner_optimizer, keras.optimizers.LossScaleOptimizer)

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> None:
        if not self.built:
            self.build(list(trainable_variables))
            self.built = True
        tvs = list(trainable_variables) if trainable_variables is not None else list(
            self._trainable_variables)
        # Under tf.distribute each replica holds its share: transform the summed gradient.
        grads = distribute.all_reduce_sum(list(grads))
        values = [v.value for v in tvs] if self.reads_weights() else []
        any_finite = (self.finite_flag(grads, values) if (self._skips() or self.needs_finite)
                      else None)
        finite = any_finite if self._skips() else None
        new_grads = distribute.hand_over(self.transform(grads, values, any_finite))

        def update(new_grads: list[Any]) -> None:
            self.inner_optimizer.apply(new_grads, tvs)

        if finite is None:
            update(new_grads)
        elif keras.backend.backend() == "tensorflow":
            distribute.cond_on_replicas(finite, update, new_grads)
        else:
            # Eager here: torch's train step, and a stateful `apply` on JAX (which trains
            # through `stateless_apply`; a lax.cond would trace `update` and leak tracers into
            # the variables it assigns). The flag has a value: a Python branch, without
            # `keras.ops.cond`'s operation wrapper (0.05 ms a step on torch).
            control.cond(finite, lambda: update(new_grads), lambda: None)

    def stateless_apply(self, optimizer_variables: list[Any], grads: list[Any],
                        trainable_variables: list[Any]) -> tuple[list[Any], list[Any]]:
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {self.__class__.__name__} must be built. "
                "Call `optimizer.build(model.trainable_variables)` first."
            )
        n_own = len(optimizer_own_variables(self))
        optimizer_variables = list(optimizer_variables)
        inner_values = optimizer_variables[n_own:]
        grads = list(grads)
        trainable_variables = list(trainable_variables)
        mapping = list(zip(self.variables, optimizer_variables, strict=True))
        self._in_stateless_apply = True
        try:
            with keras.StatelessScope(state_mapping=mapping) as scope:
                any_finite = (self.finite_flag(grads, trainable_variables)
                              if (self._skips() or self.needs_finite) else None)
                finite = any_finite if self._skips() else None
                new_grads = self.transform(grads, trainable_variables, any_finite)
        finally:
            self._in_stateless_apply = False
        own_values = [scope.get_current_value(v) for v in optimizer_own_variables(self)]

        def update() -> tuple[list[Any], list[Any]]:
            new_t, new_inner = self.inner_optimizer.stateless_apply(
                inner_values, new_grads, trainable_variables)
            return list(new_t), list(new_inner)

        if finite is None:
            new_t, new_inner = update()
        elif branch_free():
            # On an accelerator a conditional stalls the step on the host (see
            # `fused.branch_free`): apply always and keep the old values where not finite.
            new_t, new_inner = update()
            new_t = [ops.where(finite, n, o) for n, o in zip(new_t, trainable_variables,
                                                                strict=True)]
            new_inner = [ops.where(finite, n, o) for n, o in zip(new_inner, inner_values,
                                                                    strict=True)]
        else:
            new_t, new_inner = ops.cond(finite, update,
                                        lambda: (trainable_variables, inner_values))
        return list(new_t), own_values + list(new_inner)

    # -- saving ----------------------------------------------------------------------------------
    def save_own_variables(self, store: Any) -> None:
        """Save this wrapper's state (the inner optimizer's alone when :attr:`transparent`)."""
        if self.transparent:
            self.inner_optimizer.save_own_variables(store)
        else:
            super().save_own_variables(store)

    def load_own_variables(self, store: Any) -> None:
        """Load what :meth:`save_own_variables` wrote (the inner optimizer's state when
        :attr:`transparent`, so a checkpoint of the bare optimizer loads too)."""
        if self.transparent:
            self.inner_optimizer.load_own_variables(store)
        else:
            super().load_own_variables(store)

    def __dir__(self) -> list[str]:
        # Keras' saver walks `dir(optimizer)` for child objects to save; the inner optimizer's
        # variables are already saved by `save_own_variables` (ours or, transparent, its own),
        # so listing it again would store them twice under "optimizer/inner_optimizer".
        return [name for name in super().__dir__() if name != "inner_optimizer"]

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    def scale_loss(self, loss: Any) -> Any:
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list: list[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name,
                "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
                "skip_nonfinite": self.skip_nonfinite}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None
                    ) -> GradientWrapperOptimizer:
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects)
        return cls(**config)
