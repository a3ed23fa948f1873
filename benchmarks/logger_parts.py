"""Where PenaltyLogger's per-step cost goes: A/B rows that switch parts of its metric off.

    python benchmarks/logger_parts.py

MLP 784-110-110-10 (0.1 M parameters, where the step is short and the
logger's fixed cost shows most), every kernel and bias regularized, SGD,
batch 128, on Keras's backend. Each variant is its own model, traced once;
then 7 rounds interleave one 100-step epoch of each, and the table gives the
median of the per-round process-CPU-time ratios against the fit without the
logger (with an A/A row: that fit again). The parts are switched off by
replacing `PenaltyMetric.add_step` / `result` for a variant's model before it
is traced: benchmark-only code, not an option of the package.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402
from keras_l1l2plus import metrics  # noqa: E402

FULL = (metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result)


def count_only(self, loss, batch_size, recorded=None):
    self._count.assign_add(ops.cast(batch_size, "float32"))


def one_key(self):
    return {"data_loss": self._count}


VARIANTS = {
    "no logger": None,
    "no logger, again (A/A)": None,
    "PenaltyLogger": FULL,
    "the loss hook and the batch count only, all keys logged": (count_only, FULL[1]),
    "the full metric update, 1 key logged": (FULL[0], one_key),
    "the loss hook and the batch count only, 1 key logged": (count_only, one_key),
}


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(110, activation="relu"),
                              keras.layers.Dense(110, activation="relu"), keras.layers.Dense(10)])
    kl.regularize(model, l1_weight=1e-5, l1_bias=1e-5, l2_weight=1e-4, l2_bias=1e-4)
    model.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(rounds=7, steps=100):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128 * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(128 * steps,))
    models = {name: build() for name in VARIANTS}

    def run(name):
        parts = VARIANTS[name]
        if parts:
            metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result = parts
        try:
            start = time.process_time()
            models[name].fit(x, y, batch_size=128, epochs=1, verbose=0,
                             callbacks=[kl.PenaltyLogger()] if parts else [])
            return (time.process_time() - start) / steps * 1000
        finally:
            metrics.PenaltyMetric.add_step, metrics.PenaltyMetric.result = FULL

    for name in VARIANTS:  # trace each variant with its own parts
        run(name)
    cpu = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            cpu[name].append(run(name))
    base = cpu["no logger"]
    print(f"Keras {keras.__version__} on {keras.backend.backend()}\n")
    print("| variant | CPU ms/step (median) | CPU-time ratio (median) |\n|---|---:|---:|")
    for name, values in cpu.items():
        ratio = statistics.median(a / b for a, b in zip(values, base))
        print(f"| {name} | {statistics.median(values):.3f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
