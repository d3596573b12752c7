"""The paper's figures, one module each (:mod:`diffeosense.experiments.figure` is the protocol).

Every module here that does not start with ``_`` is a figure: it holds its presets (frozen
configs keyed by scale), its units, tables, claims and plots, and registers itself with
:func:`~diffeosense.experiments.figure.register_figure`; ``diffeosense reproduce`` imports them
all. Adding a figure is adding a file.

* :mod:`.noisy_training`: Fig. 1, test error against D, G, R of nets trained with noise.
* :mod:`.layerwise`: Fig. 3, D_k, G_k, R_k of original vs channel-shuffled nets.
* :mod:`.filter_spectra`: Fig. 4, Laplacian spectra of the filters at init and trained.
* :mod:`.scale_detection`: Figs. 7-9, the 1D and 2D scale-detection experiments.
"""
