"""Every example runs in its fast mode, so none rots."""

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_digits_main_job_fast_mode(tmp_path, fresh_python):
    out = fresh_python(
        f"""
        import sys
        sys.path.insert(0, {str(EXAMPLES)!r})
        import digits
        sys.exit(digits.main(["--epochs", "2", "--out", {str(tmp_path)!r}]))
        """
    )
    assert "reloaded model matches" in out
    assert (tmp_path / "digits.keras").stat().st_size > 0
    accuracy = float(out.split("test accuracy:")[1].split()[0])
    assert 0.5 < accuracy <= 1.0
