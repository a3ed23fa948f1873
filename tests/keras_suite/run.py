"""Keras's own trainer and callback tests, from the installed wheel: plain, then with the plugin.

    .venv/bin/python tests/keras_suite/run.py                       # plain, then `both`
    .venv/bin/python tests/keras_suite/run.py both logger=trainer   # modes, and their files

Each MODE[=GROUP,...] is a KL_INJECT mode of inject.py run over GROUPs (default: all of
GROUPS); the plain run covers every file any mode runs. A test that passes plain and fails
injected fails this check unless expected.py lists it for that mode and backend, and so does
an entry of expected.py that no longer fails (a stale entry). Then the entries are checked
against their reasons with two small reruns:
  - entries put down to the penalty (kinds penalty, dense, underflow) must fail with the same
    message when Keras's own L1L2 of the same λs replaces the plugin (KL_INJECT=keras_l1l2);
  - masked tests (expected.MASKED: only the logger's extra keys differ, hidden by inject.py)
    must fail without the mask, or the mask is stale.
Exit status 0 only when nothing is unexpected. Junit XML and logs go to --out.
"""

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

import expected  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the checkout: its keras_l1l2plus is the one imported
SITE = Path(keras.__file__).resolve().parents[1]  # rootdir: node ids are keras/src/...
GROUPS = {
    "trainer": ["keras/src/trainers/trainer_test.py"],
    "callbacks": ["keras/src/callbacks"],
}
BACKEND = keras.backend.backend()
FAILED = ("failed", "error")


def pytest(mode, targets, out, name, mask=None):
    """Runs pytest on `targets` (paths or node ids under SITE); returns {node id: (outcome,
    message, text)} and the wall time."""
    xml = out / f"{name}.xml"
    ini = out / "pytest.ini"  # empty: no project's pytest config applies
    ini.write_text("[pytest]\n")
    env = dict(os.environ, KL_INJECT=mode, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("KL_MASK", None)
    if mask:
        (out / "mask.txt").write_text("".join(f"{t}\n" for t in mask))
        env["KL_MASK"] = str(out / "mask.txt")
    command = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider",
               "--noconftest", "-p", "inject", "-c", str(ini), "--rootdir", str(SITE),
               "-o", "junit_family=xunit1", f"--junitxml={xml}"]
    start = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.run(command, cwd=SITE, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - start
    if code not in (0, 1):  # 1: some tests failed, which the plain run has too
        sys.exit(f"pytest {name} exited with {code}; see {out / f'{name}.log'}")
    return parse(xml), seconds


def parse(xml):
    """{node id: (outcome, message, text)} from a junit XML (xunit1: testcases have `file`)."""
    results = {}
    for case in ET.parse(xml).iter("testcase"):
        path, cls = case.get("file"), case.get("classname", "").rsplit(".", 1)[-1]
        in_class = cls != Path(path).stem  # classname ends in the module for a function test
        node = "::".join([path, cls, case.get("name")] if in_class else [path, case.get("name")])
        outcome, message, text = "passed", "", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message, text = child.get("message", ""), child.text or ""
                break
        results[node] = (outcome, message, text)
    return results


def in_files(node, files):
    return any(node == f or node.startswith(f + "/") or node.startswith(f + "::") for f in files)


def tail(text, lines=12):
    return "\n".join("      " + line for line in text.strip().splitlines()[-lines:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", default=["both"], help="MODE[=GROUP,...]")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "keras_suite")
    args = parser.parse_args()
    runs = {}
    for spec in args.runs:
        mode, _, groups = spec.partition("=")
        runs[mode] = [f for g in (groups.split(",") if groups else GROUPS) for f in GROUPS[g]]
    args.out.mkdir(parents=True, exist_ok=True)
    every = list(dict.fromkeys(f for files in runs.values() for f in files))
    print(f"Keras {keras.__version__} on {BACKEND}: {' '.join(every)} (from {SITE})")

    plain, seconds = pytest("off", every, args.out, "plain")
    times = {"plain": seconds}
    count = {o: sum(r[0] == o for r in plain.values()) for o in ("passed", "failed", "error",
                                                                   "skipped")}
    print(f"plain: {count} in {seconds:.0f} s")
    problems = []
    for mode, files in runs.items():
        wanted = expected.for_run(mode, BACKEND)
        masked = sorted(t for t in expected.MASKED
                        if in_files(t, files) and mode in ("both", "logger"))
        results, times[mode] = pytest(mode, files, args.out, mode, mask=masked)
        diffs = {t for t, r in results.items()
                 if r[0] in FAILED and plain.get(t, ("",))[0] == "passed"}
        unexpected = sorted(diffs - set(wanted))
        stale = sorted(t for t in wanted
                       if in_files(t, files) and results.get(t, ("absent",))[0] not in FAILED)
        print(f"{mode}: {len(diffs)} tests pass plain and fail injected, "
              f"{len(diffs) - len(unexpected)} of them expected, {len(unexpected)} unexpected, "
              f"{len(stale)} stale expected entries, {len(masked)} masked; {times[mode]:.0f} s")
        for test in unexpected:
            outcome, message, text = results[test]
            problems.append(f"{mode}: {test} {outcome}: {message[:300]}\n{tail(text)}")
        for test in stale:
            problems.append(f"{mode}: stale expected entry, {test} "
                            f"{results.get(test, ('absent',))[0]}: {wanted[test]}")
        # The reasons, checked: a failure put down to the penalty (an exact loss, a dense
        # gradient, no underflow) must be the penalty's, whoever adds it.
        penalty = sorted(t for t in wanted if wanted[t].kind != "keys" and t in diffs)
        if penalty:
            control, control_s = pytest("keras_l1l2", penalty, args.out, f"{mode}-keras_l1l2")
            for test in penalty:
                got, want = control.get(test, ("absent", "", "")), results[test]
                if got[0] not in FAILED or got[1] != want[1]:
                    problems.append(f"{mode}: {test} is put down to the penalty "
                                    f"({wanted[test].kind}), "
                                    f"but with Keras's L1L2 it {got[0]}: {got[1][:300]}\n"
                                    f"    with the plugin: {want[1][:300]}")
            print(f"  {len(penalty)} entries put down to the penalty rerun with "
                  f"keras.regularizers.L1L2: {control_s:.0f} s")
        if masked:  # without its mask a masked test must fail, or the mask is not needed
            unmasked, _ = pytest(mode, masked, args.out, f"{mode}-unmasked")
            for test in masked:
                passed = plain.get(test, ("",))[0] == "passed"
                if passed and unmasked.get(test, ("absent",))[0] not in FAILED:
                    problems.append(f"{mode}: stale mask, {test} passes without it")
            print(f"  {len(masked)} masked tests rerun unmasked")

    print("times: " + ", ".join(f"{m} {s:.0f} s" for m, s in times.items()))
    if problems:
        print(f"\n{len(problems)} unexpected differences:\n" + "\n".join(problems))
        return 1
    print("no unexpected differences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
