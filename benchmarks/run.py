"""Cost of the penalty and of its logging, side by side, in one process.

    KERAS_BACKEND=jax python benchmarks/run.py [--quick] [--only step,logger,...] [--out BENCHMARKS.md]

The backend is Keras's: KERAS_BACKEND (TensorFlow when unset).

Method: every contender of a case is built and warmed up first; then rounds
interleave them (A, B, C, A, B, C, ...). In a round each contender runs one
`fit` of several epochs on in-memory data; a callback reads the clock at each
epoch's begin and end (the end of an epoch waits for the step results, so the
device is synchronised), and the first epoch of each fit (tracing) is dropped.
A contender's time in a round is the median ms/step of its timed epochs; its
ratio to the baseline is taken round by round and the table shows the median
ratio and its spread (min–max over rounds). On a noisy machine the side-by-side
ratio is what counts, not an absolute time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_check import EpochClock, devices  # noqa: E402

BACKEND = keras.backend.backend()  # from KERAS_BACKEND, as Keras reads it

LAMBDAS = dict(l1=1e-5, l2=1e-4)
SECTIONS = ("overhead", "step", "logger", "repeated", "proximal", "group", "schedule", "scaling", "throughput",
            "backend")
GROUP = 1e-4  # λg of the group cases, on kernels only (as `regularize` puts it)


@dataclass
class Contender:
    name: str
    build: Callable[[], keras.Model]
    callbacks: Callable[[], list] = lambda: []
    model: keras.Model | None = None
    per_round: list[float] = field(default_factory=list)  # wall ms/step, one per round
    per_round_cpu: list[float] = field(default_factory=list)  # CPU ms/step (all threads)


def regularizers(kind):
    if kind == "none":
        return {}
    if kind in ("group", "proximal_group"):  # the kernels' units take the group term too
        proximal = kind == "proximal_group"
        return dict(kernel_regularizer=kl.L1L2Plus(**LAMBDAS, group=GROUP, proximal=proximal),
                    bias_regularizer=kl.L1L2Plus(**LAMBDAS, proximal=proximal))
    reg = {
        "keras": lambda: keras.regularizers.L1L2(**LAMBDAS),
        "plus": lambda: kl.L1L2Plus(**LAMBDAS),
        "proximal": lambda: kl.L1L2Plus(**LAMBDAS, proximal=True),
    }[kind]
    return dict(kernel_regularizer=reg(), bias_regularizer=reg())


def mlp(widths, kind="none", jit_compile="auto", optimizer="sgd"):
    def build():
        layers = [keras.Input((widths[0],))]
        for width in widths[1:-1]:
            layers.append(keras.layers.Dense(width, activation="relu", **regularizers(kind)))
        layers.append(keras.layers.Dense(widths[-1], **regularizers(kind)))
        model = keras.Sequential(layers)
        opt = keras.optimizers.get(optimizer)
        if kind.startswith("proximal"):
            opt = kl.ProximalOptimizer(opt)
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
        return model

    return build


def cnn(kind="none", jit_compile="auto"):
    def build():
        L = keras.layers
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            L.Conv2D(32, 3, activation="relu", **regularizers(kind)),
            L.MaxPooling2D(),
            L.Conv2D(64, 3, activation="relu", **regularizers(kind)),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(128, activation="relu", **regularizers(kind)),
            L.Dense(10, **regularizers(kind)),
        ])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
        return model

    return build


def data_for(model, batch, steps):
    rng = np.random.default_rng(0)
    shape = model.input_shape[1:]
    x = rng.normal(size=(batch * steps, *shape)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], size=(batch * steps,))
    return x, y


def run_case(contenders, batch, steps, epochs, rounds):
    """Interleaved rounds; fills each contender's per-round ms/step."""
    for c in contenders:
        keras.utils.set_random_seed(0)
        c.model = c.build()
    x, y = data_for(contenders[0].model, batch, steps)
    for c in contenders:  # warm-up: trace and run once
        c.model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=c.callbacks())
    for _ in range(rounds):
        for c in contenders:
            clock = EpochClock()
            c.model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[*c.callbacks(), clock])
            c.per_round.append(1000 * statistics.median(clock.wall[1:]) / steps)
            c.per_round_cpu.append(1000 * statistics.median(clock.cpu[1:]) / steps)


def n_params(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


@dataclass
class Row:
    case: str
    contender: str
    ms_per_step: float
    ratio: float | None
    ratio_lo: float | None
    ratio_hi: float | None
    goal: float | None
    params: int
    cpu: tuple[float, float, float] | None = None  # CPU-time ratio: median, min, max
    judged: str = "wall"  # which median the goal is judged on: "wall" or "cpu"


def pairwise(a, b):
    """Round-by-round ratios a/b: (median, min, max)."""
    r = [x / y for x, y in zip(a, b)]
    return statistics.median(r), min(r), max(r)


def ratio_row(case, name, c, base, goal, judged="wall"):
    wall, cpu = pairwise(c.per_round, base.per_round), pairwise(c.per_round_cpu, base.per_round_cpu)
    return Row(case, name, statistics.median(c.per_round), *wall, goal, n_params(c.model), cpu, judged)


def ratios(case, contenders, goal_for, judged="wall"):
    """Rows for each contender against the first; the second is the first again (A/A: the noise)."""
    base = contenders[0]
    rows = [Row(case, base.name, statistics.median(base.per_round), None, None, None, None, n_params(base.model))]
    for c in contenders[1:]:
        rows.append(ratio_row(case, c.name, c, base, goal_for(c.name), judged))
    return rows


def with_aa(contenders):
    """Puts a second copy of the baseline right after it: the A/A row shows the noise floor."""
    base = contenders[0]
    return [base, Contender(f"{base.name}, again (A/A)", base.build, base.callbacks), *contenders[1:]]


def regularizer_case(label, make, batch, steps, epochs, rounds):
    """(a) no regularization, (b) Keras L1L2, (c) L1L2Plus; goal: (c)/(b) ≤ 1.00 within noise."""
    contenders = with_aa([Contender(f"{kind}", make(kind)) for kind in ("none", "keras", "plus")])
    run_case(contenders, batch, steps, epochs, rounds)
    rows = ratios(label, contenders, lambda name: None)
    # The pairwise ratio that the goal is about: L1L2Plus against Keras's L1L2.
    rows.append(ratio_row(label, "plus / keras", contenders[-1], contenders[-2], 1.00))
    return rows


def overhead_case(label, make, batch, steps, epochs, rounds):
    """No regularization, Keras L1L2 and L1L2Plus, and the ratio of their overheads.

    The goal row is, round by round, (L1L2Plus / none − 1) / (Keras L1L2 / none − 1):
    ≤ 0.5 on TensorFlow and PyTorch, ≤ 1 on JAX, on the CPU-time median.
    """
    contenders = with_aa([Contender(name, make(kind)) for kind, name in
                          (("none", "no regularization"), ("keras", "Keras L1L2"), ("plus", "L1L2Plus"))])
    run_case(contenders, batch, steps, epochs, rounds)
    rows = ratios(label, contenders, lambda name: None, "cpu")
    base, keras_reg, plus = contenders[0], contenders[2], contenders[3]

    def share(series):
        r = [(p / b - 1) / (k / b - 1) for p, k, b in zip(series(plus), series(keras_reg), series(base))]
        return statistics.median(r), min(r), max(r)

    wall, cpu = share(lambda c: c.per_round), share(lambda c: c.per_round_cpu)
    goal = 1.0 if BACKEND == "jax" else 0.5
    rows.append(Row(label, "L1L2Plus overhead / Keras L1L2 overhead", statistics.median(plus.per_round), *wall,
                    goal, n_params(plus.model), cpu, "cpu"))
    return rows


def logger_case(label, make, batch, steps, epochs, rounds, update_freqs, kind="plus"):
    """Fit without the callback against fits with PenaltyLogger(update_freq=...).

    Goal (CPU-time median): ≤ 1.03 with L1L2Plus, ≤ 1.05 with the proximal
    step (`kind="proximal"`, whose sparsity_* adds a count of exact zeros).
    """
    contenders = with_aa([Contender("no logger", make(kind))])
    for freq in update_freqs:
        contenders.append(Contender(f"PenaltyLogger({freq!r})", make(kind),
                                    lambda freq=freq: [kl.PenaltyLogger(update_freq=freq)]))
    run_case(contenders, batch, steps, epochs, rounds)
    goal = 1.05 if kind == "proximal" else 1.03
    return ratios(label, contenders, lambda name: goal if name == "PenaltyLogger('batch')" else None, "cpu")


def proximal_case(label, make, batch, steps, epochs, rounds):
    """L1L2Plus with the L1 gradient against the proximal L1 step (ProximalOptimizer)."""
    contenders = with_aa([
        Contender("L1L2Plus (subgradient)", make("plus")),
        Contender("L1L2Plus(proximal=True) + ProximalOptimizer", make("proximal")),
    ])
    run_case(contenders, batch, steps, epochs, rounds)
    return ratios(label, contenders, lambda name: 1.03 if "Proximal" in name else None)


def group_case(label, make, batch, steps, epochs, rounds):
    """The group lasso's cost against L1 alone: its term in the gradient, and the proximal group step.

    Goal (CPU-time median): ≤ 1.05 for each, against the same model without the group term.
    """
    contenders = with_aa([
        Contender("L1L2Plus (subgradient)", make("plus")),
        Contender("+ group (subgradient)", make("group")),
        Contender("proximal L1", make("proximal")),
        Contender("proximal L1 + group", make("proximal_group")),
    ])
    run_case(contenders, batch, steps, epochs, rounds)
    rows = ratios(label, contenders, lambda name: 1.05 if name == "+ group (subgradient)" else None, "cpu")
    rows.append(ratio_row(label, "proximal L1 + group / proximal L1", contenders[4], contenders[3], 1.05, "cpu"))
    return rows


def schedule_case(label, make, batch, steps, epochs, rounds):
    """Constant λs against the four λs on per-step schedules (a new value, so an assignment, every step)."""
    def scheduled():
        decay = {term: keras.optimizers.schedules.PolynomialDecay(LAMBDAS[term[:2]], 1000, LAMBDAS[term[:2]] / 2)
                 for term in ("l1_weight", "l1_bias", "l2_weight", "l2_bias")}
        return [kl.PenaltySchedule(**decay)]

    contenders = with_aa([Contender("constant λs", make("plus")),
                          Contender("PenaltySchedule: 4 per-step schedules", make("plus"), scheduled)])
    run_case(contenders, batch, steps, epochs, rounds)
    return ratios(label, contenders, lambda name: 1.02 if "PenaltySchedule" in name else None, "cpu")


def repeated_fits_case(label, make, batch, steps, fits, rounds):
    """`fits` × fit(epochs=1) of `steps` steps, tracing included, with and without PenaltyLogger.

    A round's figure for a contender is the whole of its `fits` calls (wall
    and CPU ms per call); each contender keeps its own model across rounds,
    as a user calling fit in a loop does. The warm-up is one fit.
    """
    contenders = with_aa([Contender("no logger", make("plus")),
                          Contender("PenaltyLogger()", make("plus"), lambda: [kl.PenaltyLogger()])])
    for c in contenders:
        keras.utils.set_random_seed(0)
        c.model = c.build()
    x, y = data_for(contenders[0].model, batch, steps)
    for c in contenders:
        c.model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=c.callbacks())
    for _ in range(rounds):
        for c in contenders:
            start = (time.perf_counter(), time.process_time())
            for _ in range(fits):
                c.model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=c.callbacks())
            c.per_round.append(1000 * (time.perf_counter() - start[0]) / fits)
            c.per_round_cpu.append(1000 * (time.process_time() - start[1]) / fits)
    return ratios(label, contenders, lambda name: 1.03 if name.startswith("PenaltyLogger") else None)


def compiled(fn, jit):
    """`fn` compiled the backend's way, and a label; (None, None) where the backend has no such mode."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit), f"tf.function, jit_compile={jit}"
    if BACKEND == "jax":
        import jax

        return (jax.jit(fn), "jax.jit") if jit else (fn, "eager")
    return (None, None) if jit else (fn, "eager")


def width_for(params):
    """The width h of an MLP 784-h-h-10 with about `params` parameters."""
    # 784h + h + h² + h + 10h + 10 = params
    a, b, c = 1.0, 796.0, 10.0 - params
    return max(8, int((-b + (b * b - 4 * a * c) ** 0.5) / (2 * a)))


def throughput(params, repeats):
    """penalty_terms GB/s of parameters read, against NumPy abs().sum() + square().sum()."""
    h = width_for(params)
    model = kl.regularize(mlp((784, h, h, 10))(), l1_weight=1e-5, l1_bias=1e-5, l2_weight=1e-4, l2_bias=1e-4)
    arrays = [v.numpy() for v in model.trainable_weights]
    nbytes = sum(a.nbytes for a in arrays)
    rows = []
    for jit in (False, True):
        fn, how = compiled(lambda: kl.penalty_terms(model)["penalty"], jit)
        if fn is None:
            continue
        keras.ops.convert_to_numpy(fn())
        rows.append((f"penalty_terms ({how})", fn))

    def numpy_reference():
        return sum(float(np.abs(a).sum()) + float(np.square(a).sum()) for a in arrays)

    rows.append(("NumPy abs().sum() + square().sum()", numpy_reference))
    times = {name: [] for name, _ in rows}
    for _ in range(repeats):  # interleaved
        for name, fn in rows:
            start = time.perf_counter()
            result = fn()
            if not isinstance(result, float):
                keras.ops.convert_to_numpy(result)  # synchronise
            times[name].append(time.perf_counter() - start)
    return n_params(model), nbytes, {name: nbytes / statistics.median(t) / 1e9 for name, t in times.items()}


def fmt_ratio(row):
    if row.ratio is None:
        return "1 (baseline)"
    return f"{row.ratio:.3f} ({row.ratio_lo:.3f}–{row.ratio_hi:.3f})"


def fmt_cpu(row):
    if row.cpu is None:
        return "1 (baseline)"
    return f"{row.cpu[0]:.3f} ({row.cpu[1]:.3f}–{row.cpu[2]:.3f})"


def verdict(row):
    if row.goal is None or row.ratio is None:
        return ""
    median, low, _ = row.cpu if row.judged == "cpu" else (row.ratio, row.ratio_lo, row.ratio_hi)
    on = "CPU" if row.judged == "cpu" else "wall"
    if median <= row.goal:
        return f"meets ≤ {row.goal:.2f} ({on})"
    if low <= row.goal:
        return f"within noise of ≤ {row.goal:.2f} ({on} median {median:.3f})"
    return f"**misses** ≤ {row.goal:.2f} ({on} median {median:.3f})"


def table(rows):
    lines = ["| case | params | contender | ms/step (median) | wall-time ratio, median (min–max) "
             "| CPU-time ratio, median (min–max) | goal (on the median named) |",
             "|---|---:|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.params:,} | {r.contender} | {r.ms_per_step:.3f} | {fmt_ratio(r)} "
                     f"| {fmt_cpu(r)} | {verdict(r)} |")
    return "\n".join(lines)


def machine():
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, Keras {keras.__version__} on {BACKEND} {backend_version()}, "
            f"NumPy {np.__version__}, keras-l1l2plus {kl.__version__}; devices: " + ", ".join(devices()))


def backend_version():
    import importlib

    return importlib.import_module(BACKEND).__version__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: checks the script runs")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, among {','.join(SECTIONS)}")
    parser.add_argument("--targets", default=None,
                        help="comma-separated parameter counts for the logger section (default: 0.1, 0.67, 10, 50 M)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds for every case (default: per case)")
    parser.add_argument("--big", action="store_true", help="group section: the 10 M MLP too")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose among {list(SECTIONS)}")
    q = args.quick
    rounds, epochs = (2, 3) if q else (5, 3)
    steps = 4 if q else 100
    sections = []

    mlp_widths = (784, 64, 10) if q else (784, 512, 512, 10)
    rows = []
    h10 = width_for(10_000_000)
    overhead_models = [("MLP", mlp_widths, steps, rounds)]
    if not q:
        overhead_models += [("MLP", (784, h10, h10, 10), 8, 5), ("50 × Dense(64)", (784, *[64] * 50, 10), 60, 9)]
    for name, widths, s, r in overhead_models if "overhead" in only else ():
        shown = "-".join(map(str, widths)) if len(widths) < 6 else f"784-(64×{len(widths) - 2})-10"
        rows += overhead_case(f"{name} {shown}, {BACKEND}", lambda kind, w=widths: mlp(w, kind),
                              128, s, epochs, args.rounds or (r if q else max(r, rounds)))
    sections.append(("Overhead of the penalty in the train step: no regularization, Keras L1L2, L1L2Plus "
                     f"({BACKEND}, Keras's default compilation)", rows))

    rows = []
    # Keras's default per backend first: TF graph (no XLA) on CPU, XLA on JAX, eager PyTorch.
    jit_modes = {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}[BACKEND]
    for jit in jit_modes if "step" in only else ():
        rows += regularizer_case(f"MLP {'-'.join(map(str, mlp_widths))}, jit={jit}",
                                 lambda kind, jit=jit: mlp(mlp_widths, kind, jit),
                                 128, steps, epochs, rounds)
        rows += regularizer_case(f"CNN 32×32×3, jit={jit}", lambda kind, jit=jit: cnn(kind, jit),
                                 32 if q else 128, steps, epochs, rounds)
    sections.append(("Train step: no regularization, Keras L1L2, L1L2Plus (same λs on every kernel and bias)", rows))

    rows = []
    targets = [100_000] if q else [100_000, 670_000, 10_000_000, 50_000_000]
    if args.targets:
        targets = [int(t) for t in args.targets.split(",")]
    for target in targets if "logger" in only else ():
        h = 64 if q else width_for(target)
        widths = (784, 512, 512, 10) if target == 670_000 else (784, h, h, 10)
        s, r = {10_000_000: (12, 5), 50_000_000: (6, 3)}.get(target, (steps, rounds)) if not q else (steps, rounds)
        r = args.rounds or r
        for kind in ("plus", "proximal"):
            label = f"MLP {'-'.join(map(str, widths))}, {'proximal L1 (SGD)' if kind == 'proximal' else 'L1L2Plus'}"
            rows += logger_case(label, lambda k, w=widths: mlp(w, k), 128, s, epochs, r, ["batch"], kind)
    sections.append(("PenaltyLogger overhead (batch 128, CPU), against the same fit without it", rows))

    rows = []
    if "backend" in only:  # the rows every backend gets: the 0.67 M MLP, Keras's default compilation
        rows += regularizer_case(f"MLP {'-'.join(map(str, mlp_widths))}, {BACKEND}", lambda kind: mlp(mlp_widths, kind),
                                 128, steps, epochs, min(rounds, 3))
        rows += logger_case(f"MLP {'-'.join(map(str, mlp_widths))}, {BACKEND}", lambda kind: mlp(mlp_widths, kind),
                            128, steps, epochs, min(rounds, 3), ["batch"])
    sections.append((f"This backend ({BACKEND}): L1L2Plus against Keras L1L2, and PenaltyLogger", rows))

    rows = []
    fits = 3 if q else 10
    if "repeated" in only:
        rows += repeated_fits_case(f"{fits} × fit(epochs=1) of {steps if q else 150} steps, MLP "
                                   f"{'-'.join(map(str, mlp_widths))}", lambda kind: mlp(mlp_widths, kind),
                                   128, steps if q else 150, fits, rounds)
    sections.append(("Repeated fits: ms per fit call, tracing included, with and without PenaltyLogger", rows))

    rows = []
    big = (784, 64, 10) if q else (784, h10, h10, 10)
    for widths in (mlp_widths, big) if "proximal" in only else ():
        for optimizer in ("sgd", "adam"):
            small = widths == mlp_widths
            rows += proximal_case(f"MLP {'-'.join(map(str, widths))}, {optimizer}",
                                  lambda kind, o=optimizer, w=widths: mlp(w, kind, optimizer=o),
                                  128, steps if small or q else 20, epochs, rounds)
    sections.append(("Proximal L1 step (ProximalOptimizer): per-step cost against the subgradient L1", rows))

    rows = []
    for widths in ((mlp_widths, big) if args.big else (mlp_widths,)) if "group" in only else ():
        for optimizer in ("sgd", "adam"):
            small = widths == mlp_widths
            rows += group_case(f"MLP {'-'.join(map(str, widths))}, {optimizer}",
                               lambda kind, o=optimizer, w=widths: mlp(w, kind, optimizer=o),
                               128, steps if small or q else 20, epochs, rounds)
    sections.append(("Group lasso: the term (subgradient) and the proximal group step, against L1 alone", rows))

    rows = []
    if "schedule" in only:
        rows += schedule_case(f"MLP {'-'.join(map(str, mlp_widths))}, {BACKEND}", lambda kind: mlp(mlp_widths, kind),
                              128, steps, epochs, rounds)
    sections.append(("λ schedules (PenaltySchedule) against constant λs", rows))

    rows = []
    scale_targets = [100_000] if q else [100_000, 1_000_000, 10_000_000, 50_000_000]
    for target in scale_targets if "scaling" in only else ():
        h = width_for(target)
        big = target >= 10_000_000
        s, e, r = (steps, epochs, rounds) if not big or q else (8, 3, 3)
        rows += regularizer_case(f"scaling MLP 784-{h}-{h}-10", lambda kind, h=h: mlp((784, h, h, 10), kind),
                                 128, s, e, r)
        rows += logger_case(f"scaling MLP 784-{h}-{h}-10", lambda kind, h=h: mlp((784, h, h, 10), kind),
                            128, s, e, r, ["batch"])
    sections.append(("Scaling with model size (~0.1 M, 1 M, 10 M, 50 M parameters)", rows))

    out = [f"Machine: {machine()}", ""]
    for title, rows in sections:
        if rows:
            out += [f"### {title}", "", table(rows), ""]
    if "throughput" in only:
        params, nbytes, gbps = throughput(1_000_000 if q else 10_000_000, 3 if q else 15)
        numpy_gbps = gbps["NumPy abs().sum() + square().sum()"]
        lines = ["| reader | GB/s of parameters read (median) | vs NumPy | goal |", "|---|---:|---:|---|"]
        for name, value in gbps.items():
            goal = "" if name.startswith("NumPy") else ("meets ≥ NumPy" if value >= numpy_gbps else "**misses** ≥ NumPy")
            lines.append(f"| {name} | {value:.2f} | {value / numpy_gbps:.2f} | {goal} |")
        out += [f"### penalty_terms throughput ({params:,} float32 parameters, {nbytes / 1e6:.1f} MB)", "",
                "\n".join(lines), ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
