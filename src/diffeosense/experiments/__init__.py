"""Experiments: sweeps that train, measure and compare (the edge of the library).

Each experiment module holds a config dataclass and a ``run(cfg, out_dir)`` that is a pure
function of the config: results go to a folder named by ``provenance.config_hash`` and
finished pieces are skipped on a re-run.

* :mod:`diffeosense.experiments.demo`: train a small CNN on embedded digits, measure D, G, R.
* :mod:`diffeosense.experiments.scale_detection`: the paper's 1D scale-detection nets, with
  and without stride, against the theory of spatial pooling (``diffeosense.theory``), in the
  feature-learning (``small``, ``paper``) and lazy (``lazy``) regimes.
* :mod:`diffeosense.experiments.scale_detection_2d`: the 2D task on the paper's deep nets,
  test error against D, G, R.
* :mod:`diffeosense.experiments.zoo`: many models, untrained or pretrained, measured on one
  dataset into one table of D, G, R and the test error (``diffeosense zoo``).
* :mod:`diffeosense.experiments.run`: the sweep unit, ``RunConfig`` -> train, measure, ``done``.
* :mod:`diffeosense.experiments.sweep`: sweep files (TOML/YAML grids) -> runs; ``run_sweep``.
* :mod:`diffeosense.experiments.backends`: where runs execute (local pool, Ray, SLURM).
* :mod:`diffeosense.experiments.collect`: every finished run in one tidy table.
* :mod:`diffeosense.experiments.figure`: what a figure of the paper is (presets keyed by
  scale, units, tables, claims, plots) and the registry; :mod:`diffeosense.experiments.figures`:
  one module per figure (``noisy_training``, ``layerwise``, ``filter_spectra``,
  ``scale_detection``); :mod:`diffeosense.experiments.reproduce`: the loop over the figures and
  the report (``diffeosense reproduce``).

Modules are imported on demand (``from diffeosense.experiments.scale_detection import run``)
so that one experiment's imports never slow down or break another's.
"""
