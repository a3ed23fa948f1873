"""The benchmark script runs (in its quick mode) and writes its tables, so it never rots."""

import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_benchmark_writes_every_table(tmp_path, fresh_python):
    out_file = tmp_path / "bench.md"
    fresh_python(
        f"""
        import sys, runpy
        sys.argv = [{str(RUN)!r}, "--quick", "--out", {str(out_file)!r}]
        runpy.run_path({str(RUN)!r}, run_name="__main__")
        """,
        timeout=600,
    )
    text = out_file.read_text()
    for heading in ("Train step: no regularization, Keras L1L2, L1L2Plus",
                    "PenaltyLogger overhead", "Repeated fits", "Proximal L1 step", "λ schedules",
                    "Scaling with model size", "Group lasso: the term",
                    "penalty_terms throughput"):
        assert heading in text, heading
    import keras

    assert "Machine: " in text and f"on {keras.backend.backend()} " in text and "Keras" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    for contender in ("| keras |", "| plus |", "| plus / keras |", "PenaltyLogger('batch')", "proximal L1 (SGD)",
                      "| PenaltyLogger() |", "ProximalOptimizer", "PenaltySchedule: 4 per-step",
                      "NumPy abs().sum() + square().sum()", "proximal L1 + group / proximal L1"):
        assert any(contender in row for row in rows), contender
    assert any("again (A/A)" in row for row in rows)
    # Every ratio cell (wall and CPU time) is a number with its spread, or the baseline.
    table_rows = [row for row in rows if row.count("|") == 8 and "ms/step" not in row]
    cells = [c.strip() for row in table_rows for c in row.split("|")[5:7]]
    assert cells and all(c == "1 (baseline)" or "–" in c for c in cells)


def test_device_check_quick(fresh_python):
    out = fresh_python(
        f"""
        import sys, runpy
        sys.argv = [{str(RUN.parent / "device_check.py")!r}, "--quick"]
        try:
            runpy.run_path({str(RUN.parent / "device_check.py")!r}, run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        """,
        timeout=600,
    )
    assert "devices (default first): " in out
    for check in ("penalty value", "gradient", "gradient at 0", "logged terms",
                  "loss == data_loss + penalty", "proximal step"):
        assert f"[ok] {check}:" in out, check
    assert "| none, again (A/A) | none |" in out and "| L1L2Plus | Keras L1L2 |" in out
    assert "| L1L2Plus + PenaltyLogger | L1L2Plus |" in out
    assert out.strip().endswith("all checks passed")


@pytest.mark.slow
@pytest.mark.parametrize("script, expected", [
    ("shrink_inference.py", ("| forward | 256 | shrunk |", "| predict_on_batch | 1 | original (A/A) |", "fewer)")),
    ("path_cost.py", ("Warm-started path of 5 λs", "| path (n λs × E epochs) |", "fits that missed")),
])
def test_the_other_benchmarks_run_quick(tmp_path, fresh_python, script, expected):
    out_file = tmp_path / "bench.md"
    fresh_python(
        f"""
        import sys, runpy
        sys.argv = [{str(RUN.parent / script)!r}, "--quick", "--out", {str(out_file)!r}]
        try:
            runpy.run_path({str(RUN.parent / script)!r}, run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        """,
        timeout=900,
    )
    text = out_file.read_text()
    for line in expected:
        assert line in text, line
