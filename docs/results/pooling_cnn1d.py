"""Pooling analysis of the 1D scale-detection nets: writes docs/results/pooling_cnn1d_s{1,2}/.

Run from the repository root (see docs/results/pooling.md):

    OMP_NUM_THREADS=1 python docs/results/pooling_cnn1d.py [RUNS_DIR]

It runs (or finds finished in RUNS_DIR, default ``runs``) the scale-detection experiment's lazy
preset (the former small one) with seed 0 (`diffeosense scale-detection --preset lazy --seeds 1
--out runs` is the same run), then,
for each stride, the pooling report of the trained net (3 shuffled copies) and of the net at
initialization, on the whole test split, with the experiment's own measurement conventions
(label-preserving pixel moves, per-probe matched noise, denominator over all pairs i = j
included).
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffeosense.data.scale_detection import ActivePixelMove, make_scale_detection
from diffeosense.experiments.scale_detection import preset, run
from diffeosense.plots.pooling import plot_pooling, plot_spectra
from diffeosense.pooling import pooling_report
from diffeosense.train import load_checkpoint

HERE = Path(__file__).resolve().parent


def main(runs: str = "runs") -> None:
    cfg = preset("lazy", seeds=(0,))  # the former "small" preset (issue 9 renamed it)
    result = run(cfg, runs, progress=False)
    data = make_scale_detection(cfg.data_config())
    move = ActivePixelMove(data.config, label_preserving=True, boundary="clip")
    kw = dict(perturbation=move, n_probes=len(data.x_test), batch_size=cfg.measure_batch_size,
              seed=0, noise_match=cfg.noise_match, denominator=cfg.denominator)
    for stride in cfg.strides:
        ck = result.out_dir / "units" / f"s{stride}-seed0" / "train" / "checkpoints"
        trained, _, info = load_checkpoint(ck / "last.pt")
        init, _, _ = load_checkpoint(ck / "init.pt")
        meta = {"model": f"cnn1d (stride {stride})", "data": "scale-detection-1d (small)",
                "checkpoint": str(ck / "last.pt"), "epoch": info.get("epoch")}
        rep = pooling_report(trained, data.x_test, n_shuffles=3, meta={**meta, "state":
                             "trained"}, **kw)
        ini = pooling_report(init, data.x_test, n_shuffles=3, meta={**meta, "state": "init"},
                             **kw)
        out = HERE / f"pooling_cnn1d_s{stride}"
        rep.save(out)
        ini.save(out, prefix="init_")
        plot_spectra(rep.spectra, ini.spectra, path=out / "spectra.png")
        plot_pooling(rep, ini, path=out / "pooling.png")
        print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
