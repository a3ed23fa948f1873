"""Checks keras-l1l2plus on whatever device the Keras backend uses (a GPU when there is one).

    KERAS_BACKEND=jax python benchmarks/device_check.py [--quick]

Self-contained: needs keras, numpy and one backend (TensorFlow, JAX or
PyTorch), nothing else. It prints the devices Keras sees, then, on the
default device:

1. `L1L2Plus`'s value and gradient (exact zeros included) against float64 numpy;
2. a `fit` with `PenaltyLogger`: loss == data_loss + penalty, the terms against numpy;
3. the proximal step (`ProximalOptimizer(SGD)`): one step against numpy soft thresholding;
4. timing, interleaved rounds: `L1L2Plus` against Keras's `L1L2`, and
   `PenaltyLogger` against no logger, with an A/A row (the baseline measured
   twice) for the noise floor; wall-time and process CPU-time ratios.

Exits non-zero if a check fails. Takes under 2 minutes on a GPU; `--quick`
(what the test suite runs on CPU) uses tiny sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402

BACKEND = keras.backend.backend()


def devices() -> list[str]:
    """The devices the backend offers, default first."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        found = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
        gpus = [d for d in found if d.startswith("GPU")]
        return gpus + [d for d in found if d not in gpus]
    if BACKEND == "jax":
        import jax

        return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]
    if BACKEND == "torch":
        import torch

        found = [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        return found + ["cpu"]
    return [BACKEND]


def value_and_grad(f, x):
    """f(x) and ∂f/∂x for a scalar f of one tensor, on the backend's default device."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = f(t)
        return y, tape.gradient(y, t)
    if BACKEND == "jax":
        import jax

        return jax.value_and_grad(f)(jax.numpy.asarray(x))
    if BACKEND == "torch":
        t = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        y = f(t)
        y.backward()
        return y, t.grad
    raise SystemExit(f"backend {BACKEND} is not supported by this check")


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    return ok


def check_penalty(rng) -> bool:
    x = rng.normal(size=(64, 33)).astype("float32")
    x.flat[::5] = 0.0
    reg = kl.L1L2Plus(l1=0.03, l2=0.02, zero_grad=0.5)
    value, grad = value_and_grad(reg, x)
    x64 = x.astype("float64")
    expected = 0.03 * np.abs(x64).sum() + 0.02 * np.square(x64).sum()
    expected_grad = 0.03 * np.where(x64 == 0, 0.5, np.sign(x64)) + 0.04 * x64
    got = float(keras.ops.convert_to_numpy(value))
    got_grad = keras.ops.convert_to_numpy(grad).astype("float64")
    at_zero = got_grad[x == 0]
    return all([
        check("penalty value", abs(got - expected) <= 1e-5 * expected, f"{got:.6f} vs numpy {expected:.6f}"),
        check("gradient", np.allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-7),
              f"max |diff| {np.abs(got_grad - expected_grad).max():.2e}"),
        check("gradient at 0", bool(np.all(at_zero == np.float32(0.03) * np.float32(0.5))),
              f"{at_zero.size} zeros, all {float(at_zero[0]):.4f} (l1·zero_grad = 0.015)"),
    ])


def mlp(width, kind=None):
    keras.utils.set_random_seed(0)
    regs = {}
    if kind == "keras":
        regs = dict(kernel_regularizer=keras.regularizers.L1L2(1e-5, 1e-4),
                    bias_regularizer=keras.regularizers.L1L2(1e-5, 1e-4))
    elif kind == "plus":
        regs = dict(kernel_regularizer=kl.L1L2Plus(1e-5, 1e-4), bias_regularizer=kl.L1L2Plus(1e-5, 1e-4))
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(width, activation="relu", **regs),
                              keras.layers.Dense(width, activation="relu", **regs), keras.layers.Dense(10, **regs)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def check_logged_fit(rng) -> bool:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    kl.regularize(model, l1_weight=0.01, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay put
    x, y = rng.normal(size=(48, 5)).astype("float32"), rng.normal(size=(48, 2)).astype("float32")
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    logs = {k: v[0] for k, v in logs.items()}
    w = [v.numpy().astype("float64") for v in model.trainable_weights]
    expected = {"l1_weight": 0.01 * (np.abs(w[0]).sum() + np.abs(w[2]).sum()),
                "l1_bias": 0.005 * (np.abs(w[1]).sum() + np.abs(w[3]).sum()),
                "l2_weight": 0.001 * (np.square(w[0]).sum() + np.square(w[2]).sum()),
                "l2_bias": 0.0005 * (np.square(w[1]).sum() + np.square(w[3]).sum())}
    worst = max(abs(logs[k] - v) / max(v, 1e-12) for k, v in expected.items())
    identity = abs(logs["loss"] - logs["data_loss"] - logs["penalty"]) / logs["loss"]
    return all([
        check("logged terms", worst < 1e-5, f"largest relative difference from numpy {worst:.1e}"),
        check("loss == data_loss + penalty", identity < 1e-6, f"relative difference {identity:.1e}"),
    ])


def check_proximal(rng) -> bool:
    kernel = rng.normal(size=(6, 3)).astype("float32") * 0.1
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        3, use_bias=False, kernel_regularizer=kl.L1L2Plus(l1=0.05, proximal=True))])
    model.layers[0].kernel.assign(kernel)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.5)), loss="mse")
    x, y = rng.normal(size=(8, 6)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    k64 = kernel.astype("float64")
    stepped = k64 - 0.5 * 2 * x.T.astype("float64") @ (x @ k64 - y) / y.size
    expected = np.sign(stepped) * np.maximum(np.abs(stepped) - 0.5 * 0.05, 0)
    got = model.layers[0].kernel.numpy()
    return check("proximal step", np.allclose(got, expected, atol=1e-6) and np.array_equal(got == 0, expected == 0),
                 f"{int((got == 0).sum())} exact zeros, max |diff| {np.abs(got - expected).max():.1e}")


class EpochClock(keras.callbacks.Callback):
    """Wall-clock and process CPU seconds per epoch, read at epoch begin and end."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def timing(width, steps, rounds) -> None:
    x = np.random.default_rng(0).normal(size=(128 * steps, 784)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, size=128 * steps)
    contenders = {
        "none": (mlp(width), list),
        "none, again (A/A)": (mlp(width), list),
        "Keras L1L2": (mlp(width, "keras"), list),
        "L1L2Plus": (mlp(width, "plus"), list),
        "L1L2Plus + PenaltyLogger": (mlp(width, "plus"), lambda: [kl.PenaltyLogger()]),
    }
    times = {name: ([], []) for name in contenders}
    for model, callbacks in contenders.values():  # warm-up: trace and run once
        model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=callbacks())
    for _ in range(rounds):
        for name, (model, callbacks) in contenders.items():
            clock = EpochClock()
            model.fit(x, y, batch_size=128, epochs=3, verbose=0, shuffle=False, callbacks=[*callbacks(), clock])
            times[name][0].append(statistics.median(clock.wall[1:]))
            times[name][1].append(statistics.median(clock.cpu[1:]))

    def ratio(a, b, i):
        r = [p / q for p, q in zip(times[a][i], times[b][i])]
        return f"{statistics.median(r):.3f} ({min(r):.3f}–{max(r):.3f})"

    params = sum(int(np.prod(v.shape)) for v in contenders["none"][0].trainable_weights)
    print(f"\nTiming: MLP 784-{width}-{width}-10 ({params:,} parameters), batch 128, {steps} steps, "
          f"{rounds} interleaved rounds; ratios median (min–max)")
    print("| contender | against | ms/step | wall-time ratio | CPU-time ratio |\n|---|---|---:|---|---|")
    for name, base in (("none, again (A/A)", "none"), ("Keras L1L2", "none"), ("L1L2Plus", "none"),
                       ("L1L2Plus", "Keras L1L2"), ("L1L2Plus + PenaltyLogger", "L1L2Plus")):
        ms = 1000 * statistics.median(times[name][0]) / steps
        print(f"| {name} | {base} | {ms:.3f} | {ratio(name, base, 0)} | {ratio(name, base, 1)} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU, test suite)")
    args = parser.parse_args(argv)
    print(f"keras {keras.__version__}, backend {BACKEND}, keras-l1l2plus {kl.__version__}")
    print("devices (default first): " + ", ".join(devices()))
    rng = np.random.default_rng(0)
    print("checks:")
    ok = all([check_penalty(rng), check_logged_fit(rng), check_proximal(rng)])
    if args.quick:
        timing(width=32, steps=3, rounds=2)
    else:
        timing(width=1024, steps=50, rounds=5)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
