"""Past one device: sharded weights (JAX `ModelParallel`), several processes (JAX), and what PyTorch lacks.

Each distributed run is checked against the same model run unsharded on one
device, from the same initial weights (set from numpy): every logged key,
the penalty, `penalty_terms`, the final weights and the proximal step's
exact zeros, to 1e-5. The runs are in fresh processes, with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` for N virtual CPU
devices. `tests/test_callbacks.py` and `tests/test_groups.py` hold the
`DataParallel` and `MirroredStrategy` checks on one process.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from textwrap import dedent

import keras
import numpy as np
import pytest
from backends import only_on

TERMS = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")

# A 2×2 mesh ("batch", "model") of 4 virtual CPU devices. `up` (8 → 16) is split by columns, its bias with
# them; `down` (16 → 4) by rows, so `up`'s units are split alike at both ends; `down`'s bias (its 4 outputs,
# whole on each device after the row-split product is summed) stays replicated.
MODEL_PARALLEL_SETUP = """
import os
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
import json
import jax, keras, numpy as np
import keras_l1l2plus as kl

assert len(jax.devices()) == 4, jax.devices()
L = keras.layers
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")
y = rng.normal(size=(64, 4)).astype("float32")
INIT = [rng.normal(size=s).astype("float32") for s in ((8, 16), (16,), (16, 4), (4,))]
INIT[0][:, :4] *= 0.05  # weak units and input features, for the group steps to remove
INIT[0][:2] *= 0.05
INIT[2][:4] *= 0.05
SPECS = {"up/kernel": (None, "model"), "up/bias": ("model",), "down/kernel": ("model", None)}


def model_parallel():
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices=jax.devices())
    layout_map = keras.distribution.LayoutMap(mesh)
    for path, spec in SPECS.items():
        layout_map[f".*/{path}"] = spec
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def spec(variable):
    # The value's sharding: its PartitionSpec padded to the rank; "single" where it sits on one device.
    sharding = variable.value.sharding
    if not hasattr(sharding, "spec"):
        return "single"
    return list(sharding.spec) + [None] * (len(variable.shape) - len(sharding.spec))


def new_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="tanh", name="up"), L.Dense(4, name="down")])
    model.set_weights(INIT)
    return model
"""

MODEL_PARALLEL_RUN = """
PiecewiseConstantDecay = keras.optimizers.schedules.PiecewiseConstantDecay


class Shardings(keras.callbacks.Callback):
    # The metric state's layout, read while the logger's metric is in the model (at the last epoch's end).
    def on_epoch_end(self, epoch, logs=None):
        self.metrics = {v.path: spec(v) for v in self.model.metrics_variables}


def run(case, distribution):
    keras.distribution.set_distribution(distribution)
    model = new_model()
    anchors = {}
    if case == "anchor":
        kl.regularize(model, l1_weight=0.02, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, proximal_weight=True)
        for name, w0 in (("up", None), ("down", INIT[2] * 0.5)):
            layer = model.get_layer(name)
            # up: w₀ is the (sharded) kernel itself, copied; down: w₀ a numpy array.
            regularizer = kl.L1L2Plus(l1=0.02, l2=0.001, proximal=True, l2_anchor=0.5,
                                      anchor=layer.kernel if w0 is None else w0)
            layer.kernel_regularizer = layer.kernel.regularizer = anchors[name] = regularizer
        schedule = kl.PenaltySchedule(l2_anchor_weight=PiecewiseConstantDecay([6], [0.5, 1.0]))
        optimizer = keras.optimizers.SGD(0.1)
    else:
        # "units": column groups (local to up's shards, across down's); "both": every kernel by rows, the
        # "inputs" kind (across up's shards, local to down's). Adam's ε is large: ProxGen's step
        # η_i = lr·√(1 − β2^t)/(√v_i + ε) is ≈ lr/|g_i| for a small gradient, so it carries the data gradient's
        # own rounding (1.6e-5 relative on one entry here between the sharded and the one-device summation
        # order, out of Keras's backward pass, measured) into the threshold, to 9e-6 in a weight after one
        # step; with ε = 1e-2 the step still reads the sharded v but depends on it weakly.
        groups, optimizer = {"units": ("units", keras.optimizers.Adam(0.05, epsilon=1e-2)),
                             "both": ("both", keras.optimizers.SGD(0.1))}[case]
        kl.regularize(model, l1_weight=0.05, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, group_weight=0.05,
                      groups=groups, proximal_weight=True)
        schedule = kl.PenaltySchedule(l1_weight=PiecewiseConstantDecay([6], [0.05, 0.1]),
                                      group_weight=lambda epoch: 0.05 * (1 + epoch))
    model.compile(optimizer=kl.ProximalOptimizer(optimizer), loss="mse")
    shardings = Shardings()
    history = model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, validation_data=(x[:16], y[:16]),
                        callbacks=[kl.PenaltyLogger(), schedule, shardings]).history
    return {
        "history": history,
        "weights": [w.tolist() for w in model.get_weights()],
        "penalty": float(keras.ops.sum(model.losses)),
        "terms": {key: float(value) for key, value in kl.penalty_terms(model).items()},
        "variables": {v.path.split("/", 1)[-1] if "/" in v.path else v.path: spec(v) for v in model.variables},
        "optimizer": {v.path: spec(v) for v in model.optimizer.variables},
        "metrics": shardings.metrics,
        "anchors": {name: spec(r.anchor) for name, r in anchors.items()},
    }


result = {}
for case in ("units", "both", "anchor"):
    result[case] = {"single": run(case, None), "sharded": run(case, model_parallel())}
print(json.dumps(result))
"""


def _replicated(spec):
    return spec != "single" and all(axis is None for axis in spec)


@pytest.mark.slow
@only_on("jax", reason="keras.distribution.ModelParallel over virtual CPU devices")
def test_model_parallel_2x2_mesh_terms_proximal_steps_and_anchor_match_one_device(fresh_python):
    started = time.monotonic()
    out = fresh_python(dedent(MODEL_PARALLEL_SETUP) + dedent(MODEL_PARALLEL_RUN), timeout=240)
    assert time.monotonic() - started < 120
    result = json.loads(out.strip().splitlines()[-1])
    specs = {"up/kernel": [None, "model"], "up/bias": ["model"], "down/kernel": ["model", None], "down/bias": [None]}
    for case, runs in result.items():
        single, sharded = runs["single"], runs["sharded"]
        # The weights stayed where the LayoutMap put them: no kernel gathered onto one device, or replicated.
        for path, expected in specs.items():
            assert sharded["variables"][path] == expected, (case, path, sharded["variables"][path])
        assert single["variables"]["up/kernel"] == "single"  # the reference ran on one device
        # The optimizer's slots follow their variables; its scalars, the λ vector (model state) and its
        # copy in the ProximalOptimizer, and the logger's metric state are small: replicated over the mesh.
        for path, found in sharded["optimizer"].items():
            slot = re.search(r"sequential_\d+_(up|down)_(kernel|bias)_", path)
            if slot:
                assert found == specs[f"{slot[1]}/{slot[2]}"], (case, path, found)
            else:
                assert _replicated(found), (case, path, found)
        if case == "units":  # Adam's m and v (SGD keeps none)
            assert any(re.search(r"up_kernel_", p) for p in sharded["optimizer"]), sharded["optimizer"]
        assert _replicated(sharded["variables"]["lambdas"]), sharded["variables"]
        assert sharded["metrics"] and all(_replicated(s) for s in sharded["metrics"].values()), sharded["metrics"]
        # Every logged key, the penalty (what Keras adds to the loss) and penalty_terms: the one-device values.
        assert set(sharded["history"]) == set(single["history"]), case
        for key, values in single["history"].items():
            np.testing.assert_allclose(sharded["history"][key], values, rtol=1e-5, atol=1e-7, err_msg=f"{case} {key}")
        np.testing.assert_allclose(sharded["penalty"], single["penalty"], rtol=1e-5, err_msg=case)
        assert set(sharded["terms"]) == set(single["terms"]), case
        for key, value in single["terms"].items():
            np.testing.assert_allclose(sharded["terms"][key], value, rtol=1e-5, atol=1e-7, err_msg=f"{case} {key}")
        np.testing.assert_allclose(single["terms"]["penalty"], single["penalty"], rtol=1e-6)
        # The weights, and the proximal step's exact zeros, entry for entry.
        for a, b in zip(single["weights"], sharded["weights"]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=case)
            np.testing.assert_array_equal(np.array(b) == 0, np.array(a) == 0, err_msg=case)
        kernels = [np.array(w) for w in single["weights"][::2]]
        assert sum(int((k == 0).sum()) for k in kernels) > 0, case  # the proximal L1 step made zeros
        history = single["history"]
        assert history["sparsity_weight"][-1] > 0, case
        if case == "anchor":
            assert history["lambda_l2_anchor_weight"] == pytest.approx([0.5, 1.0, 1.0, 1.0])  # λa changed at step 7
            assert min(history["l2_anchor_weight"]) > 0
        else:
            assert history["lambda_group_weight"] == pytest.approx([0.05, 0.1, 0.15, 0.2])
            axis = 0 if case == "units" else 1  # a group: a column (its unit's inputs), or a row
            live = [int(np.any(k != 0, axis=axis).sum()) for k in kernels]
            assert history["live_groups"][-1] == sum(live), (case, live)
            assert sum(live) < sum(k.shape[1 - axis] for k in kernels), (case, live)  # whole groups were removed
            assert history["group_weight"][0] > 0
    # w₀ given as the sharded kernel is laid out as the kernel; given as a numpy array, replicated (measured,
    # and documented in docs/design.md: a full copy of w₀ on every device).
    assert result["anchor"]["sharded"]["anchors"] == {"up": [None, "model"], "down": [None, None]}
    print("shardings:", json.dumps({case: runs["sharded"]["variables"] for case, runs in result.items()}))
    print("anchors:", result["anchor"]["sharded"]["anchors"])


# The compiled steps, read back from XLA's dump: what moves between the devices.
HLO_RUN = """
import glob
from jax.sharding import NamedSharding, PartitionSpec

DUMP = os.environ["XLA_FLAGS"].split("--xla_dump_to=")[1].split()[0]


def new_modules(seen):
    found = sorted(set(glob.glob(os.path.join(DUMP, "*after_optimizations.txt"))) - seen)
    seen.update(found)
    return [os.path.basename(f) for f in found]


seen = set()
keras.distribution.set_distribution(model_parallel())
model = new_model()
kernel = model.get_layer("up").kernel


def gather_control(w):  # a kernel made whole on every device: what the detector must see
    return jax.lax.with_sharding_constraint(w, NamedSharding(kernel.value.sharding.mesh, PartitionSpec())) * 2.0


jax.jit(gather_control)(kernel.value).block_until_ready()
modules = {"control": new_modules(seen)}
model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x[:16], y[:16]))
modules["keras"] = new_modules(seen)

model = new_model()
kl.regularize(model, l1_weight=0.05, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, group_weight=0.05,
              groups="units", proximal_weight=True)
up = model.get_layer("up")
up.kernel_regularizer = up.kernel.regularizer = kl.L1L2Plus(
    l1=0.05, l2=0.001, group=0.05, proximal=True, l2_anchor=0.5, anchor=up.kernel)
model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(0.05)), loss="mse")
schedule = kl.PenaltySchedule(l1_weight=lambda epoch: 0.05, group_weight=lambda epoch: 0.05)
model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x[:16], y[:16]),
          callbacks=[kl.PenaltyLogger(), schedule])
modules["plugin"] = new_modules(seen)
print(json.dumps({"dump": DUMP, "modules": modules}))
"""

COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(")
SHAPE = re.compile(r"\b(?:pred|[su]\d+|f\d+|bf16)\[([\d,]*)\]")


def _collectives(path):
    """[(kind, [element count of each operand])] of every collective op in one HLO module's text."""
    found = []
    with open(path) as f:
        for line in f:
            match = COLLECTIVE.search(line)
            if match:
                sizes = [int(np.prod([int(n) for n in dims.split(",") if n])) for dims in SHAPE.findall(match[1])]
                found.append((match[2], sizes))
    return found


@pytest.mark.slow
@only_on("jax", reason="keras.distribution.ModelParallel over virtual CPU devices")
def test_model_parallel_steps_move_no_kernel_between_devices(fresh_python, tmp_path, monkeypatch):
    """The plugin's train and test steps under ModelParallel, compiled: no all-gather, and no kernel-sized
    all-reduce beyond Keras's own gradient reduction.

    The penalty's sums, the group norms, the proximal steps, the anchor term and the logger's counts are
    computed on each device's shard; what crosses devices is scalars and one norm per group.
    """
    dump = tmp_path / "hlo"
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to={dump} --xla_dump_hlo_as_text")
    out = fresh_python(dedent(MODEL_PARALLEL_SETUP) + dedent(HLO_RUN), timeout=240)
    modules = json.loads(out.strip().splitlines()[-1])["modules"]

    def steps(kind):
        names = [m for m in modules[kind] if re.search(r"jit_(train|test)_step\b", m)]
        assert names, (kind, modules[kind])
        return {name: _collectives(dump / name) for name in names}

    control = [c for name in modules["control"] for c in _collectives(dump / name)]
    assert any(kind == "all-gather" for kind, _ in control), control  # the detector sees a gather
    keras_steps, plugin_steps = steps("keras"), steps("plugin")
    largest_group_count = 16  # up's 16 units; a shard holds at most 8 of them
    keras_large = Counter()
    for collectives in keras_steps.values():
        for _, sizes in collectives:
            keras_large.update(s for s in sizes if s > largest_group_count)
    assert keras_large, keras_steps  # Keras's own gradient reduction: the sanity of the parse
    for name, collectives in plugin_steps.items():
        assert all(kind == "all-reduce" for kind, _ in collectives), (name, collectives)
        large = Counter(s for _, sizes in collectives for s in sizes if s > largest_group_count)
        assert not large - keras_large, (name, collectives, keras_steps)
    assert any(re.search(r"jit_train_step\b", name) for name in plugin_steps)


def test_logger_batch_end_hooks_stay_on_the_training_thread_when_jax_runs_several_processes(monkeypatch):
    """Across JAX processes the logger is not `async_safe`, so Keras runs every batch-end hook of `fit` and of
    its validation on the training thread (the deadlock it avoids: `PenaltyLogger.async_safe`)."""
    import threading

    import keras_l1l2plus as kl
    from keras_l1l2plus import _keras

    seen = {}

    class Where(keras.callbacks.Callback):
        async_safe = True  # leaves the choice of thread to Keras and the logger

        def on_train_batch_end(self, batch, logs=None):
            seen.setdefault("train", set()).add(threading.get_ident())

        def on_test_batch_end(self, batch, logs=None):
            seen.setdefault("test", set()).add(threading.get_ident())

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")

    def threads():
        seen.clear()
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        kl.regularize(model, l1_weight=0.01)
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y),
                  callbacks=[kl.PenaltyLogger(), Where()])
        return {kind: idents == {threading.get_ident()} for kind, idents in seen.items()}

    one_process = threads()
    assert kl.PenaltyLogger().async_safe and not _keras.multi_process()
    monkeypatch.setattr(_keras, "multi_process", lambda: True)
    assert not kl.PenaltyLogger().async_safe
    assert threads() == {"train": True, "test": True}
    # In one process Keras runs them on its worker thread where the backend allows threads (not TensorFlow's):
    # the case above is a change of thread, not Keras's default.
    assert one_process == {kind: keras.backend.backend() == "tensorflow" for kind in ("train", "test")}


# Two processes on loopback, each with 2 virtual CPU devices, DataParallel over all 4; each process feeds its
# half of every batch of 16 (`auto_shard_dataset=False`: Keras shards only a tf.data.Dataset itself), so the
# global batches are those of the one-process run.
MULTI_PROCESS_WORKER = """
import faulthandler, json, os, sys
faulthandler.dump_traceback_later(60, exit=True)  # a deadlock shows every thread's stack, and ends
out, port, processes, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
import keras, numpy as np


def cannot(stage, error):
    # The installed JAX cannot run this on CPU across processes: said, with the error, for the test to skip.
    message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    with open(out, "w") as f:
        json.dump({"cannot": f"{stage}: {type(error).__name__}: {message}"}, f)
    sys.exit(0)


if processes > 1:
    try:  # cross-process collectives on CPU need an implementation (gloo); older JAX defaulted to none
        if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception as error:
        cannot("jax_cpu_collectives_implementation", error)
    try:
        keras.distribution.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=processes, process_id=index)
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        mesh = Mesh(np.array(jax.devices()), ("d",))
        local = np.full((jax.local_device_count(),), index + 1.0, "float32")
        total = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(
            jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("d")), local))
        expected = sum(jax.local_device_count() * (i + 1.0) for i in range(processes))
        assert float(total) == expected, f"a cross-process sum gave {float(total)}, not {expected}"
    except Exception as error:
        cannot("a cross-process sum over all devices", error)
    print("cross-process sum ok", file=sys.stderr, flush=True)
import keras_l1l2plus as kl
from keras_l1l2plus import _keras

assert _keras.multi_process() == (processes > 1)
print("devices", jax.process_index(), jax.process_count(), jax.devices(), file=sys.stderr, flush=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5)).astype("float32")
y = rng.normal(size=(64, 2)).astype("float32")
init = [rng.normal(size=s).astype("float32") for s in ((5, 4), (4,), (4, 2), (2,))]
init[0][:, 0] *= 0.05  # a weak unit, for the group step to remove
batch = 16
if processes > 1:
    distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    part = batch // processes  # this process's rows of every global batch
    rows = np.concatenate([np.arange(b * batch + index * part, b * batch + (index + 1) * part)
                           for b in range(len(x) // batch)])
    x, y, batch = x[rows], y[rows], part
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
model.set_weights(init)
kl.regularize(model, l1_weight=0.05, l1_bias=0.005, l2_weight=0.001, l2_bias=0.0005, group_weight=0.05,
              groups="units", proximal_weight=True)
model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
schedule = kl.PenaltySchedule(l1_weight=keras.optimizers.schedules.PiecewiseConstantDecay([6], [0.05, 0.1]),
                              group_weight=lambda epoch: 0.3 * (1 + epoch))
history = model.fit(x, y, batch_size=batch, epochs=4, shuffle=False, verbose=0,
                    validation_data=(x[:2 * batch], y[:2 * batch]),  # the global first 32 rows, in 2 batches
                    callbacks=[kl.PenaltyLogger(), schedule]).history
with open(out, "w") as f:
    json.dump({"history": history, "weights": [w.tolist() for w in model.get_weights()],
               "devices": len(jax.devices()), "processes": jax.process_count()}, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(commands, env, timeout):
    """Runs `commands` at once, each in a process group of its own; [(return code, stderr)] and whether the
    deadline passed. Every process still running at the deadline, or when this raises, is killed with its
    group."""
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              text=True, start_new_session=True))
        deadline = time.monotonic() + timeout
        errors, timed_out = [], False
        for p in processes:
            try:
                errors.append(p.communicate(timeout=max(deadline - time.monotonic(), 0.1))[1])
            except subprocess.TimeoutExpired:
                timed_out = True
                break
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    if timed_out:
        errors = [p.communicate()[1] for p in processes]
    return [(p.wait(), err) for p, err in zip(processes, errors)], timed_out


@pytest.mark.slow
@only_on("jax", reason="keras.distribution across processes (JAX's multi-controller runtime)")
def test_multi_process_data_parallel_two_processes_on_loopback_match_one_process(tmp_path):
    import keras_l1l2plus

    script = tmp_path / "worker.py"
    script.write_text(dedent(MULTI_PROCESS_WORKER))
    root = os.path.dirname(os.path.dirname(keras_l1l2plus.__file__))  # the workers import this package
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    started = time.monotonic()
    [(code, err)], timed_out = _run_processes([[sys.executable, str(script), str(tmp_path / "one.json"), "0", "1",
                                                "0"]], env, timeout=120)
    assert not timed_out and code == 0, err[-3000:]
    port = str(_free_port())
    results, timed_out = _run_processes(
        [[sys.executable, str(script), str(tmp_path / f"worker{i}.json"), port, "2", str(i)] for i in range(2)],
        env, timeout=120)
    found = [json.loads(path.read_text()) if path.exists() else {} for path in
             (tmp_path / f"worker{i}.json" for i in range(2))]
    cannot = [r["cannot"] for r in found if "cannot" in r]
    if not cannot and not all("cross-process sum ok" in err for _, err in results):  # it hung, or crashed, there
        cannot = [err.strip().splitlines()[-1][:300] if err.strip() else f"exit {code}" for code, err in results]
    if cannot:
        import jax

        pytest.skip(f"JAX {jax.__version__} could not sum across 2 processes on CPU here: {cannot[0]}")
    assert not timed_out, [err[-3000:] for _, err in results]
    for code, err in results:
        assert code == 0, err[-3000:]
    expected = json.loads((tmp_path / "one.json").read_text())
    assert expected["processes"] == 1
    for result in found:
        assert (result["processes"], result["devices"]) == (2, 4)
        assert set(result["history"]) == set(expected["history"])
        for key, values in expected["history"].items():
            np.testing.assert_allclose(result["history"][key], values, rtol=1e-5, atol=1e-7, err_msg=key)
        for a, b in zip(expected["weights"], result["weights"]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(np.array(b) == 0, np.array(a) == 0)
    history = expected["history"]
    assert history["sparsity_weight"][-1] > 0 and history["lambda_l1_weight"] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert history["live_groups"][-1] < 6  # of 4 + 2 units: the group step removed some
    assert time.monotonic() - started < 150


@only_on("torch", reason="keras.distribution on PyTorch")
def test_keras_distribution_has_no_pytorch_backend_as_the_readme_says():
    """The README's backend table says "not available in Keras" for PyTorch (Keras 3.8.0 and 3.15.1: the names
    exist, their backend part is None). When this fails, Keras has added it: test the plugin under it."""
    assert keras.distribution.distribution() is None  # reading the global distribution works on every backend
    for call in (keras.distribution.list_devices, keras.distribution.DataParallel, keras.distribution.initialize):
        try:
            call()
        except AttributeError as error:  # 'NoneType' object has no attribute 'list_devices' / 'initialize'
            assert "NoneType" in str(error), error
        else:
            pytest.fail(f"keras.distribution.{call.__name__}() works on PyTorch in Keras {keras.__version__}: "
                        "update the README's backend table and test the plugin under it")
