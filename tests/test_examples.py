"""Every example runs in its fast mode, in a fresh process, so none rots."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backends import BACKEND, only_on

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(fresh_python, module, args):
    """Runs `module.main(args)` in a new process; returns what it returned (as JSON)."""
    out = fresh_python(
        f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(EXAMPLES)!r})
        import {module}
        result = {module}.main({args!r})
        print("RESULT " + json.dumps(result, default=lambda o: np.asarray(o).tolist()))
        """
    )
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), out


@pytest.mark.slow
@pytest.mark.parametrize("proximal", [False, True])
def test_digits_main_job(tmp_path, fresh_python, proximal):
    args = ["--fast", "--out", str(tmp_path)] + (["--proximal"] if proximal else [])
    summary, out = run_example(fresh_python, "digits", args)
    assert "reloaded: predictions and model.losses match" in out
    progress = [line for line in out.splitlines() if "val_loss:" in line]
    assert len(progress) == 3  # --fast: one line per epoch
    for line in progress:  # the terms on the line, not their validation copies
        assert "l1_weight:" in line and "penalty:" in line and "val_data_loss:" in line
        assert "val_l1_weight" not in line and "val_penalty" not in line
        assert ("sparsity_weight:" in line) == proximal  # only when some variable takes the proximal step
    assert (tmp_path / "digits.keras").stat().st_size > 0
    if BACKEND == "tensorflow":
        (run,) = (tmp_path / "tensorboard").iterdir()  # a folder of its own per run
        assert run.name.endswith("-proximal" if proximal else "-subgradient")
        assert list((run / "train").glob("events.out.tfevents.*"))
        assert list(run.glob("events.out.tfevents.*.layout"))  # the charts that group the terms
        assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in out
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "digits.png")
    assert picture.shape[0] > 300 and picture.shape[1] > 1000
    assert 0.5 < summary["test_accuracy"] <= 1.0
    terms = [summary[k] for k in ("l1_weight", "l1_bias", "l2_weight", "l2_bias")]
    assert summary["penalty"] == pytest.approx(sum(terms), rel=1e-5)
    if proximal:
        assert summary["sparsity_weight"] > 0.05  # the proximal step makes exact zeros
    else:
        assert summary["sparsity_weight"] == 0.0  # subgradient steps bring no kernel weight to exactly 0
    assert f"| test_accuracy | {summary['test_accuracy']:.6g} |" in out


# TensorFlow's C++ log lines: "I0000 00:00:17… port.cc:153] …", "E0000 … failed call to cuInit".
NATIVE_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)


@pytest.mark.slow
def test_main_job_as_a_script_prints_no_tensorflow_log_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = BACKEND
    proc = subprocess.run([sys.executable, str(EXAMPLES / "digits.py"), "--fast", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| test_accuracy |" in proc.stdout
    assert not NATIVE_LOG_LINE.search(proc.stderr), proc.stderr[:2000]
    assert not NATIVE_LOG_LINE.search(proc.stdout)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("[!_]*.py")))
def test_help_answers_before_keras_loads(example):
    """`--help` parses the arguments before importing Keras (which takes seconds)."""
    out = subprocess.run(
        [sys.executable, "-c", f"""
import runpy, sys
sys.argv = [{example!r}, "--help"]
sys.path.insert(0, {str(EXAMPLES)!r})
try:
    runpy.run_path({str(EXAMPLES / example)!r}, run_name="__main__")
except SystemExit:
    pass
print("KERAS LOADED" if "keras" in sys.modules else "KERAS NOT LOADED")
"""], capture_output=True, text=True, timeout=120)
    assert "usage:" in out.stdout and out.stdout.strip().endswith("KERAS NOT LOADED"), out.stdout + out.stderr


@pytest.mark.slow
def test_nnfs_spiral_fast_mode(fresh_python):
    ours, out = run_example(fresh_python, "nnfs_spiral", ["--epochs", "300", "--print-every", "100"])
    assert "epoch: 200, acc:" in out
    assert "validation accuracy" in out and "0.830" in out  # printed beside the book's
    assert ours["loss"] == pytest.approx(ours["data_loss"] + ours["reg_loss"], rel=1e-5)
    assert 0.4 < ours["acc"] <= 1.0 and ours["val_acc"] > 0.34
    assert 0 < ours["reg_loss"] < 1


@pytest.mark.slow
@only_on("tensorflow", reason="the example uses tf.GradientTape and tf.summary")
def test_custom_training_loop_fast_mode(tmp_path, fresh_python):
    final, out = run_example(fresh_python, "custom_training_loop", ["--steps", "60", "--out", str(tmp_path)])
    assert "step 0: loss" in out
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"loss", "data_loss", "penalty", "l1_weight", "l1_bias", "l2_weight", "l2_bias"} <= tags
    assert [e.step for e in events.Tensors("penalty")] == list(range(1, 61))
    assert final["penalty"] == pytest.approx(
        sum(final[k] for k in ("l1_weight", "l1_bias", "l2_weight", "l2_bias")), rel=1e-5)


@pytest.mark.slow
def test_breast_cancer_feature_selection_fast_mode(fresh_python):
    rows, out = run_example(fresh_python, "breast_cancer_features", ["--lambdas", "0.001,0.1", "--steps", "400"])
    kept = [len(r["kept"]) for r in rows]
    assert kept[0] > kept[1] >= 1  # a larger λ keeps fewer features
    assert all(r["accuracy"] > 0.85 for r in rows)
    weights = np.array(rows[1]["weights"])
    assert (weights == 0).sum() == 30 - kept[1]
    assert "| 0.1 |" in out


@pytest.mark.slow
def test_gradual_sparsity_reaches_its_target(tmp_path, fresh_python):
    result, out = run_example(fresh_python, "gradual_sparsity",
                              ["--target", "0.3", "--start", "1e-3", "--growth", "2", "--epochs", "8",
                               "--out", str(tmp_path)])
    assert result["sparsity"] >= 0.3 and "reached 0.3" in out
    lambdas = result["lambdas"]
    np.testing.assert_allclose(lambdas, [1e-3 * 2 ** e for e in range(len(lambdas))], rtol=1e-6)  # λ1w per epoch
    assert result["path"] == sorted(result["path"])  # exact zeros only grow as λ1 rises
    assert (tmp_path / "gradual_sparsity.png").stat().st_size > 0


def _all_finite(value):
    """Every number in a nested dict/list structure is finite."""
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bool(np.isfinite(value))
    return True


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn", "cnn-no-batchnorm"])
def test_shrink_digits_fast_mode(fresh_python, model):
    args = ["--fast", "--group-weight", "0.03"] + {"mlp": [], "cnn": ["--cnn"],
                                                     "cnn-no-batchnorm": ["--cnn", "--no-batchnorm"]}[model]
    result, out = run_example(fresh_python, "shrink_digits", args)
    assert _all_finite(result)
    assert result["model"] == model[:3] and result["epochs"] == 10
    assert 0.8 < result["control_accuracy"] <= 1.0
    (row,) = result["rows"]
    assert row["same_predictions"]  # the shrunk model predicts what the original predicts, sample by sample
    assert row["shrunk_test_accuracy"] == row["test_accuracy"] > 0.8
    assert all(a <= b for a, b in zip(row["widths_after"], row["widths_before"]))
    assert row["params_after"] < row["params_before"] and row["macs_after"] < row["macs_before"]
    assert row["params_ratio"] == pytest.approx(row["params_before"] / row["params_after"])
    if model == "mlp":  # measured on TensorFlow, JAX, PyTorch: 256-128 → ≤ 70 units each, 6× fewer parameters
        assert max(row["widths_after"]) < 128 and row["params_ratio"] > 3
    assert "check: max |small - original|" in out and "| 0.03 |" in out


@pytest.mark.slow
def test_breast_cancer_groups_fast_mode(fresh_python):
    result, out = run_example(fresh_python, "breast_cancer_groups", ["--fast", "--alphas", "0.03,0.1"])
    assert _all_finite(result)
    # Dense(2) + MSE + the row groups is MultiTaskLasso's objective: 1000 proximal SGD steps select
    # exactly its features (measured: Jaccard 1.0, max |ΔW| ≤ 1.3e-3 on TensorFlow).
    for row in result["linear"]:
        assert row["jaccard"] == 1.0 and row["max_coef_diff"] < 0.02
        assert abs(row["accuracy"] - row["sklearn_accuracy"]) < 0.015
    mlp = result["mlp"]
    assert 3 <= len(mlp["kept"]) < 30
    # Measured (TensorFlow, seed 0, 50 epochs): Jaccard 0.60 with L1 logistic regression, 0.41 with MultiTaskLasso.
    assert mlp["jaccard_logistic"] >= 0.4 and mlp["jaccard_mtl"] >= 0.25
    assert mlp["same_predictions"] and mlp["shrunk_accuracy"] == mlp["accuracy"] > 0.85
    assert len(mlp["kept_features"]) == len(mlp["kept"]) and mlp["x_small_shape"] == [143, len(mlp["kept"])]
    assert mlp["params_after"] < mlp["params_before"]
    assert "report.kept_features = {'features': [" in out


@pytest.mark.slow
def test_path_digits_fast_mode(tmp_path, fresh_python):
    result, out = run_example(fresh_python, "path_digits", ["--fast", "--out", str(tmp_path)])
    assert result["epochs"] == 4 and result["cv"] == 2
    lambdas = result["lambdas"]
    assert lambdas == sorted(lambdas) and len(lambdas) == 4  # direction="increasing": the grid walked up
    assert "regularization_path: fold 2/2" in out and "λ 4/4: λ=0.3" in out  # the path's own line per λ
    chosen = result["chosen"]
    assert chosen["1se"]["lambda"] >= chosen["min"]["lambda"]  # the 1-SE rule picks the sparser side
    for rule in ("min", "1se"):
        assert 0.5 < chosen[rule]["test_accuracy"] <= 1.0
        i = chosen[rule]["index"]
        assert chosen[rule]["zeros_weight"] == result["zeros_weight"][i]
        assert result["cv_mean"][i] <= result["cv_mean"][chosen["min"]["index"]] + result["cv_se"][
            chosen["min"]["index"]] + 1e-12
    # Up an increasing path the group term only removes units: the exact zeros do not fall (a unit may come back
    # under Adam: 0.01 of slack) and the largest λs have some (measured: 0.16-0.17 at λ = 0.1, 0.27-0.31 at λ = 0.3 on
    # TensorFlow, JAX and PyTorch).
    zeros, live = result["zeros_weight"], result["live_groups"]
    assert all(b >= a - 0.01 for a, b in zip(zeros, zeros[1:])), zeros
    assert all(b <= a + 2 for a, b in zip(live, live[1:])), live
    assert zeros[-1] > 0.05 and live[-1] < 192
    # live_groups (the library's count) is the units with a non-zero kernel column, counted from the kept weights.
    assert [sum(w) for w in result["widths"]] == live
    assert all(0.5 < a <= 1.0 for a in result["test_accuracy"])
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "path_digits.png").shape[0] > 200
    rows = (tmp_path / "path_digits.csv").read_text().splitlines()
    assert len(rows) == 1 + len(lambdas) and "cv_mean" in rows[0] and "live_groups" in rows[0]


@pytest.mark.slow
def test_path_breast_cancer_is_lasso_path(fresh_python):
    result, out = run_example(fresh_python, "path_breast_cancer", ["--fast"])
    # Keras's "mse" is twice scikit-learn's (1/(2n))·‖y − Xw‖²: λ_max = 2·‖Xᵀy‖∞/n, α = λ/2.
    assert result["lambda_max"] == pytest.approx(2 * result["alpha_max"], rel=1e-5)
    assert result["alphas"][0] == pytest.approx(result["alpha_max"], rel=2e-5)
    assert len(result["alphas"]) == 8 and result["active_keras"][0] == 0
    # 2000 full-batch proximal SGD steps per λ, warm-started: the same active set as lasso_path at every λ (measured:
    # Jaccard 1.0 at all 8 λs on TensorFlow, JAX and PyTorch), so every feature enters at the same λ, in the same order.
    assert result["jaccard"] == [1.0] * 8
    assert result["active_keras"] == result["active_sklearn"]
    assert result["entry_keras"] == result["entry_sklearn"]
    assert result["order_keras"] == result["order_sklearn"] and len(result["order_keras"]) >= 6
    assert result["order_keras"][:2] == ["worst perimeter", "worst concave points"]
    # The coefficients: ≤ 1.2e-5 apart except at the third λ, where worst radius enters beside worst perimeter
    # (correlation 0.99: an ill-conditioned lasso) and worst perimeter is 0.043 from lasso_path's after 2000 steps.
    assert result["max_coef_diff"] < 0.06
    assert "1. worst perimeter" in out


@pytest.mark.slow
def test_finetune_digits_fast_mode(fresh_python):
    result, out = run_example(fresh_python, "finetune_digits", ["--fast"])
    assert _all_finite(result)
    assert result["plain"]["lambda"] == [0.0]
    for method in ("l2", "l2_sp"):
        assert result[method]["lambda"][0] in (1e-3, 3e-3)  # --fast: the grid's 3rd and 4th λ
    for method in ("plain", "l2", "l2_sp"):
        assert 0.5 < result[method]["test_accuracy"][0] <= 1.0 and result[method]["moved"][0] > 0
    assert "L2-SP (toward w₀)" in out and "‖w − w₀‖/‖w₀‖" in out
