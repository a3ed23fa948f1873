"""Where PenaltyLogger's per-step cost goes: A/B rows that switch its parts off.

    KERAS_BACKEND=jax python benchmarks/logger_parts.py [--params 100000] [--rounds 7]

An MLP 784-h-h-10 of about `--params` parameters, every kernel and bias
regularized (l1 = 1e-5, l2 = 1e-4), SGD, batch 128, on Keras's backend. Each
variant is its own model, traced once; then rounds interleave one fit of
two 100-step epochs of each, the second one timed (as `run.py` drops each
fit's first epoch: the per-fit set-up is not a per-step cost), and the table
gives the median of the per-round process CPU time and wall time ratios
against the fit without the logger (with an A/A row: that fit again). Rows add the logger's parts one at a time:

1. the loss hook alone: `compute_loss` wrapped, the terms recorded as the
   regularizers compute them, only the batch count kept;
2. the terms added into the running means, one key logged;
3. every key logged: the metric's result, computed in each step and turned
   into Python floats at each epoch's end;
4. (proximal) the count of exact zeros for `sparsity_*`;
5. Keras's progress bar (`verbose=1`, to a file): its per-step work is per
   logged key, against the same bar without the logger.

The parts are switched off by replacing `PenaltyMetric.add_step` / `result`
while a variant's model is traced: benchmark-only code, not an option of
the package.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402
from keras_l1l2plus.logger import metric as metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_check import EpochClock  # noqa: E402
from run import BACKEND, mlp, width_for  # noqa: E402

FULL = (metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result)


def count_only(self, loss, batch_size, recorded=None):
    self._totals.assign_add(ops.one_hot(len(self.mean_keys), len(self.mean_keys) + 1) * ops.cast(batch_size, "float32"))


def without_zero_count(self, loss, batch_size, recorded=None):
    latest, self._latest = self._latest, None
    try:
        FULL[0](self, loss, batch_size, recorded)
    finally:
        self._latest = latest


def one_key(self):
    return {"data_loss": self._totals[-1]}


# name: (model kind, (add_step, result) or None for no logger, verbose, the row it is against)
VARIANTS = {
    "no logger": ("plus", None, 0, "no logger"),
    "no logger, again (A/A)": ("plus", None, 0, "no logger"),
    "1. the loss hook and recording only": ("plus", (count_only, one_key), 0, "no logger"),
    "2. + the terms into the running means, 1 key logged": ("plus", (FULL[0], one_key), 0, "no logger"),
    "3. + every key logged: PenaltyLogger": ("plus", FULL, 0, "no logger"),
    "proximal, no logger": ("proximal", None, 0, "no logger"),
    "proximal, PenaltyLogger without the zero count": ("proximal", (without_zero_count, FULL[1]), 0,
                                                       "proximal, no logger"),
    "4. proximal, PenaltyLogger": ("proximal", FULL, 0, "proximal, no logger"),
    "verbose=1, no logger": ("plus", None, 1, "no logger"),
    "5. verbose=1, PenaltyLogger": ("plus", FULL, 1, "verbose=1, no logger"),
}


@contextlib.contextmanager
def parts(chosen):
    if chosen:
        metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result = chosen
    try:
        yield
    finally:
        metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result = FULL


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    h = width_for(args.params)
    steps = args.steps
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128 * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(128 * steps,))
    models = {}
    for name, (kind, *_) in VARIANTS.items():
        keras.utils.set_random_seed(0)
        models[name] = mlp((784, h, h, 10), kind)()

    def run(name):
        _, chosen, verbose, _ = VARIANTS[name]
        clock = EpochClock()
        with parts(chosen), contextlib.redirect_stdout(io.StringIO()):
            models[name].fit(x, y, batch_size=128, epochs=2, verbose=verbose, shuffle=False,
                             callbacks=[*([kl.PenaltyLogger()] if chosen else []), clock])
        return [clock.cpu[-1] / steps * 1000, clock.wall[-1] / steps * 1000]

    for name in VARIANTS:  # trace each variant with its own parts
        run(name)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            times[name].append(run(name))
    params = int(sum(np.prod(v.shape) for v in models["no logger"].trainable_weights))
    print(f"Keras {keras.__version__} on {BACKEND}; MLP 784-{h}-{h}-10, {params:,} parameters, "
          f"{steps} steps per epoch, {args.rounds} rounds\n")
    print("| variant | CPU ms/step (median) | CPU-time ratio, median (min–max) | wall-time ratio, median |\n"
          "|---|---:|---|---:|")
    for name, values in times.items():
        base = VARIANTS[name][3]
        cpu = [a[0] / b[0] for a, b in zip(values, times[base])]
        wall = statistics.median(a[1] / b[1] for a, b in zip(values, times[base]))
        against = "" if base == "no logger" else f" (against “{base}”)"
        print(f"| {name}{against} | {statistics.median(v[0] for v in values):.3f} "
              f"| {statistics.median(cpu):.3f} ({min(cpu):.3f}–{max(cpu):.3f}) | {wall:.3f} |")


if __name__ == "__main__":
    main()
