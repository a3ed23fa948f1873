"""What a regularization path costs: against independent fits, and per λ against a plain fit.

    KERAS_BACKEND=jax python benchmarks/path_cost.py [--quick] [--rounds N] [--out FILE]

Two measurements, CPU time of the process (both threads) and wall time:

1. **Warm starts against fits from scratch.** A lasso (bias-free Dense(1),
   standardized x with correlated features, corr = 0.8^|i−j|, the loss
   ½·(y − ŷ)², the proximal L1 step under SGD at 1/L, full batch),
   n_lambdas λs from λ_max down. The path trains each λ until an epoch
   lowers the training objective by less than 1e-7 relative (`tol`); then,
   for each λ, a fit from zero weights runs until its objective is within
   1e-6 of what the path reached there (so both reach the same validation
   loss; the table gives the largest gap, and the path's gap to scikit-
   learn's `Lasso` optimum). The ratio is the fits' time over the path's.
   Goal: ≥ 5× less CPU time for 20 λs.
2. **Per-λ overhead.** The same model: a path of n λs × E epochs against
   one plain `fit` of n·E epochs with a constant λ (the same steps), with a
   `PenaltyLogger` in both; interleaved rounds (path, fit, fit again: the
   A/A row), the median ratio and its min–max. Goal: ≤ 1.05 CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402

BACKEND = keras.backend.backend()


def half_squared_error(y_true, y_pred):
    return 0.5 * keras.ops.sum(keras.ops.square(keras.ops.subtract(y_true, y_pred)), axis=-1)


def problem(n=400, p=40, rho=0.8, seed=0):
    """Correlated features (corr(x_i, x_j) = rho^|i−j|, as in real designs): ISTA needs many steps."""
    rng = np.random.default_rng(seed)
    covariance = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    x = rng.normal(size=(2 * n, p)) @ np.linalg.cholesky(covariance).T
    x = (x - x.mean(0)) / x.std(0)
    w = np.zeros(p)
    w[: p // 4] = rng.normal(size=p // 4) * 2
    y = x @ w + rng.normal(size=2 * n)
    x, y = x.astype("float32"), (y - y.mean()).astype("float32")[:, None]
    return (x[:n], y[:n]), (x[n:], y[n:])


def model_for(x, lam=1.0):
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(1, use_bias=False,
                                                                             kernel_initializer="zeros")])
    kl.regularize(model, l1_weight=lam, proximal_weight=True)
    lr = 1.0 / np.linalg.eigvalsh(x.astype("float64").T @ x / len(x)).max()
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(lr)), loss=half_squared_error)
    return model


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class StopAt(keras.callbacks.Callback):
    """Stops when the epoch's `loss` (full batch: the objective at the step's weights) is at most `target`."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.reached = False

    def on_epoch_end(self, epoch, logs=None):
        if logs["loss"] <= self.target:
            self.reached = True
            self.model.stop_training = True


def objective(w, x, y, lam):
    r = y[:, 0].astype("float64") - x.astype("float64") @ w
    return 0.5 * np.mean(r**2) + lam * np.abs(w).sum()


def optimum(x, y, lam):
    from sklearn.linear_model import Lasso

    w = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(
        x.astype("float64"), y[:, 0].astype("float64")).coef_
    return objective(w, x, y, lam)


def warm_vs_scratch(n_lambdas, cap, repeats, tol=1e-7):
    """The path with `tol` (each λ until an epoch gains < tol); then a fit from zero weights per λ until it is as
    good (training objective within 1e-6 of the path's there). Full batch: one step per epoch."""
    (x, y), validation = problem()
    batch = len(x)
    rows = []
    for _ in range(repeats):
        model = model_for(x)
        with Clock() as path_clock:
            path = kl.regularization_path(model, x, y, n_lambdas=n_lambdas, eps=1e-3, epochs=cap, tol=tol,
                                          batch_size=batch, validation_data=validation, shuffle=False, verbose=0)
        reached = [objective(path.weights_at(lam)[0][:, 0], x, y, lam) for lam in path.lambdas]
        gap = max(r / optimum(x, y, lam) - 1 for r, lam in zip(reached, path.lambdas))
        scratch = Clock()
        scratch.wall = scratch.cpu = 0.0
        fit_epochs, missed, val_gap = 0, 0, 0.0
        for lam, target, record in zip(path.lambdas, reached, path.records):
            model = model_for(x, lam)
            stop = StopAt(target * (1 + 1e-6))
            with Clock() as clock:
                history = model.fit(x, y, batch_size=batch, epochs=cap, validation_data=validation, shuffle=False,
                                    verbose=0, callbacks=[kl.PenaltyLogger(), stop])
            scratch.wall += clock.wall
            scratch.cpu += clock.cpu
            fit_epochs += len(history.history["loss"])
            missed += not stop.reached
            val_gap = max(val_gap, abs(history.history["val_data_loss"][-1] / record["val_data_loss"] - 1))
        path_epochs = sum(r["epochs"] for r in path.records)
        rows.append((path_clock, scratch, path_epochs, fit_epochs, missed, gap, val_gap))
    return rows


def overhead(n_lambdas, epochs, rounds):
    (x, y), validation = problem()
    batch = len(x) // 4
    lambdas = list(np.geomspace(1.0, 1e-3, n_lambdas))
    path_model, fit_model, again_model = model_for(x), model_for(x), model_for(x)

    def run_path():
        kl.regularization_path(path_model, x, y, lambdas=lambdas, epochs=epochs, batch_size=batch, shuffle=False,
                               verbose=0)

    def run_fit(model):
        model.fit(x, y, batch_size=batch, epochs=n_lambdas * epochs, shuffle=False, verbose=0,
                  callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(l1_weight=0.01)])

    contenders = {"plain fit (n·E epochs)": lambda: run_fit(fit_model),
                  "plain fit, again (A/A)": lambda: run_fit(again_model), "path (n λs × E epochs)": run_path}
    for run in contenders.values():  # warm-up: traces
        run()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            with Clock() as clock:
                run()
            times[name].append((clock.wall, clock.cpu))
    base = times["plain fit (n·E epochs)"]
    rows = []
    for name, series in times.items():
        wall = [s[0] / b[0] for s, b in zip(series, base)]
        cpu = [s[1] / b[1] for s, b in zip(series, base)]
        rows.append((name, statistics.median(s[0] for s in series), statistics.median(wall), min(wall), max(wall),
                     statistics.median(cpu), min(cpu), max(cpu)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="scratch,overhead", help="scratch (warm starts against fits), overhead")
    args = parser.parse_args(argv)
    q = args.quick
    n_lambdas = 5 if q else 20
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Keras "
             f"{keras.__version__} on {BACKEND}", ""]
    only = set(args.only.split(","))
    tol = 1e-4 if q else 1e-7
    rows = warm_vs_scratch(n_lambdas, 300 if q else 20000, 1, tol) if "scratch" in only else []
    lines += [f"Warm-started path of {n_lambdas} λs (each λ until an epoch gains < {tol:g}, `tol`) against a fit from "
              "zero weights per λ run until its training objective is as good (within 1e-6); lasso 400 × 40, "
              "features correlated 0.8^|i−j|, SGD at 1/L, full batch", "",
              "| repeat | path epochs | fits' epochs | fits that missed | path's gap to the optimum | "
              "validation loss gap | path CPU s | fits CPU s | CPU ratio | wall ratio | goal |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, (path, scratch, path_epochs, epochs, missed, gap, val_gap) in enumerate(rows):
        ratio = scratch.cpu / path.cpu
        goal = "meets ≥ 5×" if ratio >= 5 else "**misses** ≥ 5×"
        lines.append(f"| {i + 1} | {path_epochs} | {epochs} | {missed} | {gap:.1e} | {val_gap:.1e} | "
                     f"{path.cpu:.1f} | {scratch.cpu:.1f} | {ratio:.2f} | {scratch.wall / path.wall:.2f} | {goal} |")
    rounds = args.rounds or (2 if q else 5)
    epochs = 2 if q else 5
    if "overhead" not in only:
        print("\n".join(lines))
        return 0
    lines += ["", f"Per-λ overhead: a path of {n_lambdas} λs × {epochs} epochs against one fit of "
              f"{n_lambdas * epochs} epochs, both logged; {rounds} interleaved rounds", "",
              "| run | wall s (median) | wall ratio (min–max) | CPU ratio (min–max) | goal |", "|---|---:|---:|---:|---|"]
    for name, wall_s, w, wlo, whi, c, clo, chi in overhead(n_lambdas, epochs, rounds):
        goal = ""
        if name.startswith("path"):
            goal = "meets ≤ 1.05 (CPU)" if c <= 1.05 else "**misses** ≤ 1.05 (CPU)"
        lines.append(f"| {name} | {wall_s:.2f} | {w:.3f} ({wlo:.3f}–{whi:.3f}) | {c:.3f} ({clo:.3f}–{chi:.3f}) | "
                     f"{goal} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
