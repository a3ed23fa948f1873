"""Ops per regularized variable in one train step, on Keras's backend.

    KERAS_BACKEND=torch python benchmarks/op_count.py

Each model is built twice, without regularization and with a regularizer on
every kernel and bias; the difference in ops per train step, divided by the
number of regularized variables, is the regularizer's ops per variable
(forward, backward, and the summing of its gradient into the data gradient).
What counts as an op is the backend's unit of dispatch:

- TensorFlow: the nodes of the traced train step's graph and of the
  functions it calls, without `Const`, `NoOp`, `Identity`, `IdentityN` and
  `StopGradient` (free, or removed by Grappler before the graph runs);
- PyTorch: the ATen ops dispatched during one `train_on_batch`
  (`TorchDispatchMode`), forward and backward;
- JAX: the equations of the train step's jaxpr (sub-jaxprs included), and the
  instructions of XLA's optimized entry computation, where fused elementwise
  work is one `fusion` (roughly, the kernels launched).
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BACKEND, data_for, mlp  # noqa: E402

FREE = {"Const", "NoOp", "Identity", "IdentityN", "StopGradient", "Placeholder"}


def graph_ops(fn, *args) -> collections.Counter:
    """TensorFlow: the op types of `fn`'s traced graph and the functions it calls, without the free ones."""
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*[tf.constant(a) for a in args]).graph
    counts = collections.Counter(op.type for op in graph.get_operations())
    for function in graph.as_graph_def().library.function:
        counts.update(node.op for node in function.node_def)
    return collections.Counter({op: n for op, n in counts.items() if op not in FREE})


def dispatched_ops(fn, *args) -> collections.Counter:
    """PyTorch: the ATen ops dispatched while `fn(*args)` runs, backward passes included."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn(*args)
    return counts


def _tensorflow(model, x, y):
    counts = graph_ops(lambda x, y: model.train_step((x, y)), x, y)
    return {"ops": sum(counts.values())}, counts


def _torch(model, x, y):
    model.train_on_batch(x, y)  # built, and its optimizer too
    counts = dispatched_ops(model.train_on_batch, x, y)
    return {"ops": sum(counts.values())}, counts


def _jax(model, x, y):
    import jax

    model.train_on_batch(x, y)
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    data = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y), None)
    closed = jax.make_jaxpr(model.train_step)(state, data)
    counts = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] += 1
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(closed.jaxpr)
    hlo = jax.jit(model.train_step).lower(state, data).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    entry = entry[:entry.index("\n}")]
    kernels = [line for line in entry.splitlines()[1:] if "=" in line and " parameter(" not in line
               and "get-tuple-element" not in line and " tuple(" not in line and " constant(" not in line]
    return {"ops": sum(counts.values()), "XLA kernels": len(kernels)}, counts


def count(model, x, y):
    """`({measure: n}, Counter of op types)` for one train step of `model`."""
    return {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax}[BACKEND](model, x, y)


MODELS = {
    "MLP 784-512-512-10": (784, 512, 512, 10),
    "50 × Dense(64)": (784, *[64] * 50, 10),
}


def per_variable(widths, kind):
    """`({measure: ops per regularized variable}, Counter of the extra op types)` for `kind`."""
    keras.utils.set_random_seed(0)
    base_model, model = mlp(widths, "none")(), mlp(widths, kind)()
    x, y = data_for(model, 128, 1)
    base, base_types = count(base_model, x, y)
    with_reg, types = count(model, x, y)
    n = len(model.trainable_weights)
    return {k: (with_reg[k] - base[k]) / n for k in base}, types - base_types


def main():
    print(f"Keras {keras.__version__} on {BACKEND}\n")
    print("| model | regularizer | ops per regularized variable | extra op types |\n|---|---|---|---|")
    for label, widths in MODELS.items():
        for kind, name in (("keras", "Keras L1L2"), ("plus", "L1L2Plus")):
            measures, types = per_variable(widths, kind)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in measures.items())
            top = ", ".join(f"{op} {n}" for op, n in types.most_common(8))
            print(f"| {label} | {name} | {shown} | {top} |")


if __name__ == "__main__":
    main()
