#!/usr/bin/env python
"""
Mutation check of the package's core with mutmut: each module is mutated on its own and its
mutants run against the tests that cover it, so that a run fits a small machine.

For every module named (all of MODULES when none is), a scratch copy of the package, tests/ and
configs/ is made under --work-dir/<module>, with a setup.cfg that tells mutmut to mutate that one
file and to select among that module's test files. mutmut then runs, for each mutant, only the
tests that reach the mutated function. The tally per module (killed, timed out, survived, not
covered by any test) is printed as a Markdown table and kept in --work-dir/summary.json; the diff
of every surviving mutant goes to --work-dir/<module>/survivors.diff for review.

It is not part of the test suite: a full run takes hours on two cores.

    nice -n 19 python tools/mutation_check.py [MODULE ...] [--work-dir output/mutation]
    nice -n 19 python tools/mutation_check.py --list
    nice -n 19 python tools/mutation_check.py --resume MODULE   # go on after an interruption
    nice -n 19 python tools/mutation_check.py --recheck MODULE  # survivors against new tests

Requires mutmut (pip install -e ".[mutation]").
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Module (under gaussian_retina/) -> the test files that cover it. mutmut narrows each mutant to
# the tests among these that call the mutated function.
MODULES = {
    "data/gaussian_target.py": ["test_gaussian_target.py", "test_dataset_mapper.py"],
    "data/dataset_mapper.py": ["test_dataset_mapper.py"],
    "data/image_reader.py": ["test_image_reader.py", "test_dataset_mapper.py"],
    "data/mosaic.py": ["test_dataset_mapper.py"],
    "data/scale_jitter.py": ["test_dataset_mapper.py"],
    "modeling/gaussian_loss.py": ["test_gaussian_loss.py", "test_model.py", "test_training_step.py"],
    "modeling/gaussian_branch.py": ["test_gaussian_branch.py", "test_model.py"],
    "modeling/meta_arch.py": ["test_model.py", "test_training_step.py", "test_box_voting.py",
                              "test_quality_focal_loss.py", "test_soft_nms.py"],
    "modeling/anchor_matching.py": ["test_anchor_matching.py"],
    "modeling/backbone.py": ["test_model.py", "test_anchor_matching.py"],
    "modeling/box_voting.py": ["test_box_voting.py"],
    "modeling/quality_focal_loss.py": ["test_quality_focal_loss.py"],
    "modeling/soft_nms.py": ["test_soft_nms.py"],
    "evaluation/dense_coco_evaluation.py": ["test_evaluation.py"],
    "evaluation/error_anatomy.py": ["test_error_anatomy.py"],
    "evaluation/benchmark.py": ["test_evaluate_all.py"],
    "shelves/retail_csv.py": ["test_datasets.py", "test_retail_csv.py"],
    "shelves/coco_yolo.py": ["test_datasets.py", "test_coco_yolo.py"],
    "shelves/box_table.py": ["test_box_table.py", "test_datasets.py", "test_retail_csv.py",
                             "test_coco_yolo.py"],
    "shelves/bad_input.py": ["test_bad_input.py", "test_datasets.py"],
    "baselines/em_merger.py": ["test_em_merger.py"],
    "inference/tiling.py": ["test_predict.py", "test_tiling.py"],
    "inference/counting.py": ["test_predict.py", "test_counting.py"],
    "inference/writers.py": ["test_predict.py", "test_evaluation.py", "test_writers.py"],
    "inference/calibration.py": ["test_counting.py", "test_predict_run.py"],
    "inference/run_outputs.py": ["test_run_outputs.py", "test_predict_run.py"],
    "engine/model_ema.py": ["test_model_ema.py"],
}

# mutmut's own result names, grouped as the summary counts them. A timeout is a mutant the
# tests caught by running past their limit (an endless loop), so it counts as killed.
KILLED = {"killed", "timeout", "segfault"}
SURVIVED = {"survived"}
NOT_COVERED = {"no tests"}


def _module_dir(work_dir: Path, module: str) -> Path:
    return work_dir / module.replace("/", "_").removesuffix(".py")


def _prepare(work: Path, module: str, tests, timeout_constant: float) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("gaussian_retina", "tests", "configs"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    # mutmut 3 does not mutate decorated functions (but for one @classmethod or @staticmethod).
    # A grad-mode decorator changes no value the tests read, so the copy goes without it.
    mutated = work / "gaussian_retina" / module
    source = mutated.read_text()
    mutated.write_text("".join(
        line for line in source.splitlines(keepends=True) if line.strip() != "@torch.no_grad()"
    ))
    # Tests that read the shared photos find them beside the copy, as beside the project.
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (work / "shared").symlink_to(shared)
    selection = [f"tests/{t}" for t in tests if (ROOT / "tests" / t).is_file()]
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = gaussian_retina\n"
        f"only_mutate = gaussian_retina/{module}\n"
        "also_copy = configs\n"
        "pytest_add_cli_args_test_selection =\n"
        + "".join(f"    {t}\n" for t in selection)
        + "pytest_add_cli_args = -p no:cacheprovider -x -q\n"
        # torch is not fork-safe once it has run: each mutant forks from a clean server.
        "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
        # The machine is shared: a limit of 15x the tests' time would turn a busy minute into
        # false timeouts. These give every mutant at least (t + constant) * 10 seconds.
        "timeout_multiplier = 10\n"
        f"timeout_constant = {timeout_constant}\n"
    )


def _results(work: Path):
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work, capture_output=True, text=True, check=True,
    ).stdout
    results = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            results[name] = status
    return results


def _write_survivors(work: Path, results) -> None:
    with open(work / "survivors.diff", "w") as f:
        for name, status in sorted(results.items()):
            if status in SURVIVED | NOT_COVERED:
                diff = subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", name],
                    cwd=work, capture_output=True, text=True,
                ).stdout
                f.write(f"# {name}: {status}\n{diff}\n")


def tally(results):
    counts = {"total": len(results), "killed": 0, "timeout": 0, "survived": 0, "no tests": 0,
              "other": 0}
    for status in results.values():
        if status in KILLED:
            counts["killed"] += 1
            counts["timeout"] += status == "timeout"
        elif status in SURVIVED:
            counts["survived"] += 1
        elif status in NOT_COVERED:
            counts["no tests"] += 1
        else:
            counts["other"] += 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules under gaussian_retina/ (default: all)")
    parser.add_argument("--work-dir", default="output/mutation", type=Path)
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--timeout-constant", type=float, default=10.0)
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the unchecked mutants of a module's earlier run")
    parser.add_argument("--recheck", action="store_true",
                        help="copy the current tests in and run the surviving mutants again")
    parser.add_argument("--summarize", action="store_true",
                        help="tally the runs already in --work-dir, run nothing")
    args = parser.parse_args()
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}; --list names them")
    work_dir = args.work_dir.resolve()
    summary_file = work_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for module in args.modules or list(MODULES):
        work = _module_dir(work_dir, module)
        if args.recheck and work.is_dir():
            survivors = [n for n, st in _results(work).items() if st in SURVIVED | NOT_COVERED]
            for tests in (work / "tests", work / "mutants" / "tests"):
                shutil.rmtree(tests)
                shutil.copytree(ROOT / "tests", tests,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            if survivors:
                subprocess.run(
                    [sys.executable, "-m", "mutmut", "run", "--max-children",
                     str(args.max_children), *survivors],
                    cwd=work, env=env, stdout=subprocess.DEVNULL, check=False,
                )
            minutes = summary.get(module, {}).get("minutes")
        elif not args.summarize:
            if not (args.resume and (work / "mutants").is_dir()):
                _prepare(work, module, MODULES[module], args.timeout_constant)
            start = time.time()
            subprocess.run(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
                cwd=work, env=env, stdout=subprocess.DEVNULL, check=False,
            )
            minutes = (time.time() - start) / 60
            if args.resume:
                minutes += summary.get(module, {}).get("minutes") or 0
        elif not work.is_dir():
            continue
        else:
            minutes = summary.get(module, {}).get("minutes")
        results = _results(work)
        _write_survivors(work, results)
        # Read again: another module's run may have written it meanwhile.
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        summary[module] = dict(tally(results), minutes=minutes, tests=MODULES[module])
        work_dir.mkdir(parents=True, exist_ok=True)
        summary_file.write_text(json.dumps(summary, indent=1, sort_keys=True))
        print(f"{module}: {summary[module]}", flush=True)

    print("\n| module | killed / total | score | survived | no tests | not run | minutes |")
    print("|---|---|---|---|---|---|---|")
    for module, s in summary.items():
        scored = s["killed"] + s["survived"] + s["no tests"]
        score = f"{100 * s['killed'] / scored:.1f} %" if scored else "-"
        minutes = f"{s['minutes']:.0f}" if s.get("minutes") is not None else "-"
        print(f"| {module} | {s['killed']} / {scored} | {score} | {s['survived']} | "
              f"{s['no tests']} | {s['other']} | {minutes} |")


if __name__ == "__main__":
    main()
