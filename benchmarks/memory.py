"""Peak memory of a train step, each variant in a fresh process.

    KERAS_BACKEND=jax python benchmarks/memory.py [--params 20e6] [--layers 1] [--variants none,keras,plus]

Method: each variant (no regularizer; Keras's `L1L2`; `L1L2Plus`; `L1L2Plus`
in a `fit` logged by `PenaltyLogger`; the proximal step) runs in a new Python
process, so that no allocator pool of another variant is reused. The model is
`layers` square `Dense` layers holding `params` parameters in all (one
4472×4472 float32 kernel at 20 M and 1 layer), SGD, batch 8. The process's peak
resident set size (Linux `VmHWM`, reset through `/proc/self/clear_refs`) is
read around the first `fit` of one step (tracing included) and around a second
`fit` of 20 steps; the table gives each peak minus the resident size just
before that `fit`, in MiB: the median of `--repeats` fresh processes, and
their range (the CPU allocators' peaks move by a kernel-sized buffer from one
process to the next, as frees and allocations interleave). On a CPU, resident memory is where the tensors of
the step live (TensorFlow's, JAX's and PyTorch's CPU allocators all take it
from the process); on a GPU the same copies would be device memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = ("none", "keras", "plus", "plus_logged", "proximal")


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size


def measure(variant: str, params: float, layers: int, jit_compile: str = "auto") -> dict:
    """Runs in the child process: the two peaks of one variant."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import keras_l1l2plus as kl

    width = int(round((params / layers) ** 0.5))
    regularizer = {
        "none": lambda: None,
        "keras": lambda: keras.regularizers.L1L2(l1=1e-6, l2=1e-6),
        "plus": lambda: kl.L1L2Plus(l1=1e-6, l2=1e-6),
        "plus_logged": lambda: kl.L1L2Plus(l1=1e-6, l2=1e-6),
        "proximal": lambda: kl.L1L2Plus(l1=1e-6, l2=1e-6, proximal=True),
    }[variant]
    model = keras.Sequential([keras.Input((width,))] + [
        keras.layers.Dense(width, use_bias=False, kernel_regularizer=regularizer()) for _ in range(layers)])
    optimizer = keras.optimizers.SGD(1e-3)
    model.compile(optimizer=kl.ProximalOptimizer(optimizer) if variant == "proximal" else optimizer, loss="mse",
                  jit_compile={"auto": "auto", "on": True, "off": False}[jit_compile])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, width)).astype("float32")
    y = rng.standard_normal((160, width)).astype("float32")
    callbacks = (lambda: [kl.PenaltyLogger()]) if variant == "plus_logged" else (lambda: [])
    result = {"variant": variant, "width": width, "layers": layers}
    for name, n in (("first", 8), ("later", 160)):
        before = _rss_mib("VmRSS")
        _reset_peak()
        model.fit(x[:n], y[:n], batch_size=8, epochs=1, verbose=0, callbacks=callbacks())
        result[name] = _rss_mib("VmHWM") - before
    return result


def xla_buffers(params: float) -> None:
    """JAX: XLA's own buffer plan for the penalty's value and gradient of one kernel (exact, no RSS noise)."""
    import jax
    import keras
    import numpy as np

    import keras_l1l2plus as kl

    width = int(round(params ** 0.5))
    kernel = jax.numpy.asarray(np.random.default_rng(0).standard_normal((width, width)).astype("float32"))
    print(f"\nXLA buffers of jit(value_and_grad(regularizer)) on one {width}×{width} float32 kernel, MiB")
    print("| regularizer | temporaries | outputs |\n|---|---:|---:|")
    for name, regularizer in (("keras", keras.regularizers.L1L2(1e-6, 1e-6)), ("plus", kl.L1L2Plus(1e-6, 1e-6))):
        memory = jax.jit(jax.value_and_grad(regularizer)).lower(kernel).compile().memory_analysis()
        print(f"| {name} | {memory.temp_size_in_bytes / 2**20:.1f} | {memory.output_size_in_bytes / 2**20:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=20e6)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="compile(jit_compile=...): Keras's default, XLA on, XLA off")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.params, args.layers, args.jit_compile)))
        return 0
    import keras

    print(f"{keras.backend.backend()}, {args.params / 1e6:g} M parameters in {args.layers} Dense layer(s), "
          f"jit_compile={args.jit_compile}, "
          "peak resident memory above the resident size before the fit, MiB (fresh process per variant)")
    print("| variant | first step (tracing): median (range) | 20 later steps: median (range) |")
    print("|---|---:|---:|")
    for variant in args.variants.split(","):
        rows = [_child(variant, args) for _ in range(args.repeats)]
        cells = []
        for name in ("first", "later"):
            values = sorted(row[name] for row in rows)
            cells.append(f"{statistics.median(values):.0f} ({values[0]:.0f}–{values[-1]:.0f})")
        print(f"| {variant} | {cells[0]} | {cells[1]} |", flush=True)
    if keras.backend.backend() == "jax":
        xla_buffers(args.params)
    return 0


def _child(variant: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--params", str(args.params),
                          "--layers", str(args.layers), "--jit-compile", args.jit_compile],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
