"""The main job's TensorBoard, checked over HTTP and photographed in headless Chromium.

    python docs/tensorboard_screenshot.py [--logdir DIR] [--epochs 15] [--out docs/tensorboard.png]

Without `--logdir`, runs the main job twice (`examples/digits.py`, L1 by its
subgradient, then `--proximal`) into a temporary folder, each run in its own
TensorBoard folder. Then starts TensorBoard on 127.0.0.1 (a free port), and
over HTTP checks that the custom-scalars layout written by
`write_tensorboard_layout` is served and that every chart of it has data in
every run; then takes a screenshot of the "Custom Scalars" dashboard with
headless Chromium (`apt-get install chromium`) and stops TensorBoard.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve(logdir: Path, timeout: float = 120):
    """Runs TensorBoard on `logdir` at 127.0.0.1 (a free port); yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        for line in process.stdout:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if found:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("TensorBoard did not start")
        else:
            raise RuntimeError(f"TensorBoard exited with {process.wait()}")
        url = found.group(1)
        while not fetch(url, "/data/runs"):  # until it has read the log directory
            if time.monotonic() > deadline:
                raise TimeoutError("TensorBoard read no run")
            time.sleep(0.5)
        yield url
    finally:
        process.kill()
        process.wait()


def fetch(url: str, path: str, **query: str):
    """GET `url + path` with `query`; the decoded JSON."""
    address = url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(address, timeout=30) as response:
        return json.loads(response.read())


def chart_data(url: str) -> dict[str, dict[str, dict[str, list]]]:
    """{chart title: {run: {tag: [(wall time, step, value), ...]}}} for the served layout."""
    layout = fetch(url, "/data/plugin/custom_scalars/layout")
    data = {}
    for category in layout["category"]:
        for chart in category["chart"]:
            (pattern,) = chart["multiline"]["tag"]
            data[chart["title"]] = {
                run: fetch(url, "/data/plugin/custom_scalars/scalars", run=run, tag=pattern)["tag_to_events"]
                for run in fetch(url, "/data/runs")
            }
    return data


def screenshot(url: str, out: Path, size: str = "1400,1400") -> None:
    """Headless Chromium's picture of TensorBoard's "Custom Scalars" dashboard (a fresh profile, no network)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={size}",
             "--virtual-time-budget=60000", f"--screenshot={out}", f"{url}/#custom_scalars"],
            check=True, capture_output=True, timeout=180,
        )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="TensorBoard logs to show (default: run the main job twice)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tensorboard.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir
        if logdir is None:
            for flags in ([], ["--proximal"]):
                subprocess.run([sys.executable, str(ROOT / "examples" / "digits.py"), "--epochs", str(args.epochs),
                                "--out", tmp, *flags], check=True, stdout=subprocess.DEVNULL)
            logdir = Path(tmp) / "tensorboard"
        with serve(logdir) as url:
            data = chart_data(url)
            for title, runs in data.items():
                tags = {tag for run in runs.values() for tag in run}
                print(f"{title}: {len(tags)} tags {sorted(tags)} in {sum(bool(r) for r in runs.values())} runs")
                assert tags, f"chart {title!r} has no data"
            screenshot(url, args.out)
    print(f"screenshot: {args.out}")
    return data


if __name__ == "__main__":
    main()
