"""Pooling analysis of the 1D scale-detection nets: writes docs/results/pooling_cnn1d_s{1,2}/.

Run from the repository root (see docs/results/pooling.md):

    OMP_NUM_THREADS=1 python docs/results/pooling_cnn1d.py [RUNS_DIR]

It runs (or finds finished in RUNS_DIR, default ``runs``) the scale-detection experiment's lazy
preset (the former small one) with seed 0 (`diffeosense scale-detection --preset lazy --seeds 1
--out runs` is the same run), then, for each stride s in (1, 2), the one CLI command

    ck=runs/scale-detection-<hash>/runs/<run>/train/checkpoints   # <run>: the unit's run hash
    task=scale-detection-1d:size=64,xi=8.0,gap=2.0,task=distance,amplitude=none,test_size=none
    diffeosense pooling --checkpoint $ck/last.pt --init-checkpoint $ck/init.pt --data $task \\
        --n-shuffles 3 --init-shuffles 3 --n-probes all --denominator pairs-incl-diag \\
        --seed 0 --batch-size 256 --no-progress --out docs/results/pooling_cnn1d_s{s}

that is, the pooling report of the trained net and of the net at initialization (3 shuffled
copies each), on the whole test split, with the experiment's own measurement conventions: the
probes taken alternately from the two classes (``balanced_probes``), the task's
label-preserving pixel move (``ActivePixelMove``, the CLI's default on a scale-detection task),
per-probe matched noise, the denominator over all pairs with i = j included.

``--data`` is the run's task (``ScaleDetectionExperiment.dataset_name()``); the units'
checkpoints name their task and need no ``--data``, but units finished before that (in the old
``units/s{s}-seed0/train/checkpoints`` layout) hold the bare ``scale-detection-1d`` (the default
task), which the CLI refuses without it. With ``--data`` naming the same dataset the
checkpoint's P and data seed are kept, so the split is the experiment's either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffeosense.cli import main as cli
from diffeosense.experiments.scale_detection import preset, run

HERE = Path(__file__).resolve().parent


def main(runs: str = "runs", out_dir: Path = HERE, **overrides) -> None:
    """``overrides``: fields of the preset (a smaller config to check the script)."""
    cfg = preset("lazy", **{"seeds": (0,), **overrides})  # the former "small" preset
    result = run(cfg, runs, progress=False)
    run_of = {(u["stride"], u["seed"]): u["run"] for u in result.units}
    for stride in cfg.strides:
        ck = result.out_dir / "runs" / run_of[stride, 0] / "train" / "checkpoints"
        rc = cli(["pooling", "--checkpoint", str(ck / "last.pt"),
                  "--init-checkpoint", str(ck / "init.pt"), "--data", cfg.dataset_name(),
                  "--n-shuffles", "3", "--init-shuffles", "3", "--n-probes", "all",
                  "--denominator", cfg.denominator, "--seed", "0",
                  "--batch-size", str(cfg.measure_batch_size), "--no-progress",
                  "--out", str(Path(out_dir) / f"pooling_cnn1d_s{stride}")])
        if rc:
            raise SystemExit(rc)


if __name__ == "__main__":
    main(*sys.argv[1:])
