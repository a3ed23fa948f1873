"""What the tests need from the backend they run on, one function per need.

Tests call these instead of `tf.GradientTape`, `jax.grad` or `torch.autograd`,
so every test module runs unchanged under KERAS_BACKEND=tensorflow, jax and
torch. Tests of a feature one backend lacks use `only_on(...)`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
# Keras runs PyTorch eagerly, one step per call: steps_per_execution must be 1 there.
SPE_SUPPORTED = BACKEND != "torch"


def steps_per_execution(n: int) -> int:
    """`n` where many steps per call are cheap (TensorFlow loops over them in the graph), else 1.

    PyTorch allows no more than 1; JAX unrolls them inside `jax.jit`, whose
    compile time grows with n (tests of steps_per_execution itself use small n).
    """
    return n if BACKEND == "tensorflow" else 1


def only_on(*backends: str, reason: str):
    """Skips a test on other backends, saying why."""
    return pytest.mark.skipif(BACKEND not in backends, reason=f"{reason} ({BACKEND} backend)")


def slow_on(*backends: str):
    """Marks a test `slow` on `backends` only (CI's extra backend legs run `-m "not slow"`)."""
    return pytest.mark.slow if BACKEND in backends else (lambda test: test)


def dtype_name(tensor: Any) -> str:
    """A tensor's dtype as Keras names it ("float32", "bfloat16", ...), on every backend."""
    return keras.backend.standardize_dtype(tensor.dtype)


def to_numpy(tensor: Any) -> np.ndarray:
    """A tensor as a float64 numpy array (bfloat16 included)."""
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float64"))


def value_and_grad(f: Callable[[Any], Any], x: Any, mode: str = "eager") -> tuple[Any, Any]:
    """`f(x)` and `∂f/∂x` for a scalar function of one tensor, as backend tensors.

    `x` is a numpy array or a backend tensor; the gradient has `x`'s dtype.
    `mode`: "eager", "compiled" (tf.function / jax.jit) or "xla"
    (jit_compile=True / jax.jit). PyTorch runs every mode eagerly (Keras
    compiles PyTorch only through `fit`'s `jit_compile`).
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def run(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = f(t)
            return y, tape.gradient(y, t, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(tf.convert_to_tensor(x))
    if BACKEND == "jax":
        import jax

        run = jax.value_and_grad(f)
        return (jax.jit(run) if mode != "eager" else run)(jax.numpy.asarray(x))
    if BACKEND == "torch":
        import torch

        t = x.detach().clone() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        t.requires_grad_(True)
        y = f(t)
        if y.requires_grad:  # else f does not depend on x through a gradient
            y.backward()
        return y.detach(), t.grad if t.grad is not None else torch.zeros_like(t)
    raise NotImplementedError(BACKEND)


def grad_wrt_variable(f: Callable[[Any], Any], initial: np.ndarray) -> np.ndarray:
    """∂f/∂v for a `keras.Variable` v holding `initial`, with f called on the variable itself."""
    variable = keras.Variable(initial)
    if BACKEND == "jax":
        import jax

        def on_value(value):
            with keras.StatelessScope(state_mapping=[(variable, value)]):
                return f(variable)

        return np.asarray(jax.grad(on_value)(variable.value))
    return keras.ops.convert_to_numpy(gradients(lambda: f(variable), [variable])[1][0])


def gradients(loss_fn: Callable[[], Any], variables: Sequence[Any]) -> tuple[float, list]:
    """`loss_fn()` (a float) and its gradients with respect to `variables` (backend tensors).

    On JAX the loss is computed in a `keras.StatelessScope` that maps the
    variables to the values being differentiated.
    """
    variables = list(variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
    elif BACKEND == "jax":
        import jax

        def on_values(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        loss, grads = jax.value_and_grad(on_values)([v.value for v in variables])
    elif BACKEND == "torch":
        for v in variables:
            v.value.grad = None
        loss = loss_fn()
        loss.backward()
        loss = loss.detach()
        grads = [v.value.grad for v in variables]
    else:
        raise NotImplementedError(BACKEND)
    return float(keras.ops.convert_to_numpy(loss)), list(grads)


def compiled(fn: Callable[[], Any], xla: bool = False) -> Callable[[], Any]:
    """`fn` as the backend compiles it (tf.function, jax.jit); PyTorch: unchanged."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=xla)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


def custom_loop(model: Any, optimizer: Any, loss_fn: Callable[[], Any], steps: int) -> None:
    """`steps` steps of `optimizer` on `loss_fn()`, a custom training loop written the backend's way.

    TensorFlow: a `tf.function` step with `tf.GradientTape` and
    `apply_gradients`; JAX: a jitted stateless step (`jax.grad` in a
    `keras.StatelessScope`, `optimizer.stateless_apply`), the variables
    assigned at the end; PyTorch: eager steps with `backward()`.
    """
    variables = model.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn()
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        for _ in range(steps):
            step()
    elif BACKEND == "jax":
        import jax

        optimizer.build(variables)
        frozen = model.non_trainable_variables

        def loss_of(values, frozen_values):
            mapping = list(zip(variables, values)) + list(zip(frozen, frozen_values))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn()

        @jax.jit
        def step(values, frozen_values, optimizer_values):
            grads = jax.grad(loss_of)(values, frozen_values)
            return optimizer.stateless_apply(optimizer_values, grads, values)

        values, frozen_values = [v.value for v in variables], [v.value for v in frozen]
        optimizer_values = [v.value for v in optimizer.variables]
        for _ in range(steps):
            values, optimizer_values = step(values, frozen_values, optimizer_values)
        for variable, value in (*zip(variables, values), *zip(optimizer.variables, optimizer_values)):
            variable.assign(value)
    elif BACKEND == "torch":
        for _ in range(steps):
            _, grads = gradients(loss_fn, variables)
            optimizer.apply_gradients(zip(grads, variables))
    else:
        raise NotImplementedError(BACKEND)


def op_count(fn: Callable[..., Any], *args: Any) -> int:
    """Ops `fn(*args)` dispatches, counted the backend's way.

    TensorFlow: the nodes of its traced graph (`tf.function`), without those
    that cost nothing (constants, identities, placeholders); PyTorch: the
    ATen ops dispatched while it runs, backward passes included; JAX: the
    equations of its jaxpr.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        specs = [tf.constant(a) for a in args]
        graph = tf.function(fn).get_concrete_function(*specs).graph
        free = {"Const", "NoOp", "Identity", "IdentityN", "StopGradient", "Placeholder"}
        return sum(op.type not in free for op in graph.get_operations())
    if BACKEND == "jax":
        import jax

        return len(jax.make_jaxpr(fn)(*args).jaxpr.eqns)
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        fn(*[keras.ops.convert_to_tensor(a) for a in args])
    return len(calls)
