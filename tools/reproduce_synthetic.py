#!/usr/bin/env python3
"""
Small-scale reproduction of the paper's claim on the synthetic dense shelves: trains every config
with identical budgets for several seeds through train_net.py, in parallel jobs, then writes the
paper's columns as mean and standard deviation over seeds, into <output-root>/table.md (or
--table).

    python tools/reproduce_synthetic.py --seeds 0 1 2 --jobs 2 --threads 1

Runs that already finished (their metrics.json holds the final evaluation) are not run again, so
the command can be resumed or extended with more seeds or configs. A run whose training finished
(model_final.pth) but whose final evaluation did not is only evaluated, with train_net.py
--eval-only; the evaluator writes its figures to inference/<dataset>/bbox_metrics.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gaussian_retina.evaluation import paper_metric_names

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [
    "configs/synthetic/retinanet_R18.yaml",
    "configs/synthetic/gdn_R18.yaml",
    "configs/synthetic/gln_R18.yaml",
    "configs/synthetic/goldman_R18.yaml",
    "configs/synthetic/faster_rcnn_R18.yaml",
    "configs/synthetic/mask_rcnn_R18.yaml",
]
COLUMNS = paper_metric_names()


def final_metrics(output_dir: Path):
    """
    The last evaluation in a run's metrics.json (or, for an --eval-only run, the evaluator's
    inference/<dataset>/bbox_metrics.json), as {column: percent}, or None.
    """
    path = output_dir / "metrics.json"
    found = None
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "bbox/AP" in row:
                found = {c: row.get(f"bbox/{c}", float("nan")) for c in COLUMNS}
    if found is None:
        for path in sorted(output_dir.glob("inference/*/bbox_metrics.json")):
            row = json.loads(path.read_text())
            found = {c: row.get(c, float("nan")) for c in COLUMNS}
    if found is None and (output_dir / "final_eval.json").is_file():  # runs of earlier versions
        found = json.loads((output_dir / "final_eval.json").read_text())
    return found


def run_one(config: str, seed: int, out: Path, threads: int, opts):
    if final_metrics(out) is not None:
        return config, seed, None
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # Training finished but its final evaluation did not: evaluate the final weights only.
    eval_only = (out / "model_final.pth").is_file()
    flags = ["--eval-only"] if eval_only else []
    cmd = [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(ROOT / config), *flags]
    cmd += ["SEED", str(seed), "OUTPUT_DIR", str(out), *opts]
    if eval_only:
        cmd += ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    log_path = out / ("eval_only.log" if eval_only else "stdout.log")
    start = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if not eval_only:
        (out / "wall_time_s.txt").write_text(f"{wall:.1f}\n")
    if rc != 0:
        print(f"FAILED ({rc}): {' '.join(cmd)}; see {log_path}", flush=True)
    return config, seed, wall


def _mean_sd(values):
    mean = f"{statistics.mean(values):.1f}"
    return f"{mean} ± {statistics.stdev(values):.1f}" if len(values) > 1 else mean


def table_lines(configs, seeds, root):
    """One row per config: each column's mean ± sd over the finished seeds, and the wall time."""
    lines = ["| model | seeds | " + " | ".join(COLUMNS) + " | wall time per run (min) |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for config in configs:
        outs = [root / Path(config).stem / f"seed{s}" for s in seeds]
        metrics = [m for m in map(final_metrics, outs) if m is not None]
        walls = [float((o / "wall_time_s.txt").read_text()) / 60
                 for o in outs if (o / "wall_time_s.txt").is_file()]
        cells = [_mean_sd([m[c] for m in metrics]) if metrics else "-" for c in COLUMNS]
        wall = f"{statistics.mean(walls):.1f}" if walls and metrics else "-"
        lines.append(f"| {Path(config).stem} | {len(metrics)} | " + " | ".join(cells)
                     + f" | {wall} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output-root", default="output/reproduction")
    # Into the output root by default: results/synthetic_reproduction.md is assembled by hand from
    # several invocations, and one run of this script would overwrite it.
    parser.add_argument("--table", help="markdown table to write (default: <output-root>/table.md)")
    parser.add_argument("--no-run", action="store_true", help="only write the table")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = parser.parse_args()

    root = Path(args.output_root)
    table_path = Path(args.table) if args.table else root / "table.md"
    runs = [(c, s, root / Path(c).stem / f"seed{s}") for s in args.seeds for c in args.configs]
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [] if args.no_run else [
            pool.submit(run_one, c, s, out, args.threads, args.opts) for c, s, out in runs]
        for i, f in enumerate(futures, 1):
            config, seed, wall = f.result()
            what = "already done" if wall is None else f"{wall / 60:.1f} min"
            print(f"[{i}/{len(runs)}] {Path(config).stem} seed {seed}: {what}", flush=True)
    total = time.time() - start

    lines = table_lines(args.configs, args.seeds, root)
    table = "\n".join(lines)
    print(table)
    print(f"Total wall time: {total / 60:.1f} min with {args.jobs} jobs x {args.threads} threads")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(table + "\n")
    print(f"Table written to {table_path}")


if __name__ == "__main__":
    main()
