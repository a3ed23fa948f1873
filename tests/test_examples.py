"""Every example runs in its fast mode, in a fresh process, so none rots."""

import json
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
    assert "l1_weight:" in out and "val_data_loss:" in out  # the terms in the progress lines
    assert (tmp_path / "digits.keras").stat().st_size > 0
    if BACKEND == "tensorflow":
        assert list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "digits.png")
    assert picture.shape[0] > 300 and picture.shape[1] > 1000
    assert 0.5 < summary["test_accuracy"] <= 1.0
    terms = [summary[k] for k in ("l1_weight", "l1_bias", "l2_weight", "l2_bias")]
    assert summary["penalty"] == pytest.approx(sum(terms), rel=1e-5)
    if proximal:
        assert summary["sparsity_weight"] > 0.05  # the proximal step makes exact zeros
    else:
        assert summary["sparsity_weight"] == 0.0  # subgradient steps never land on zero
    assert f"| test_accuracy | {summary['test_accuracy']:.6g} |" in out


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
