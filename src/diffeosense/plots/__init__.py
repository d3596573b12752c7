"""Figures, one module per engine (the edge of the library: the core never imports this package).

- :mod:`.sensitivity`: D, G, R against depth or relative depth (``plot_sensitivity``);
- :mod:`.zoo`: a model zoo's test error against R (``plot_zoo``);
- :mod:`.diffeo`: an image deformed over a grid of (cut, T) (``plot_diffeo_grid``);
- :mod:`.scale_detection`: the scale-detection experiment beside the theory;
- :mod:`.pooling`: filter spectra by depth and D/G/R of channel-shuffled copies
  (``plot_spectra``, ``plot_pooling``).
- :mod:`.tracking`: D, G, R over (layer, epoch) during training (``plot_tracking``).
- :mod:`.reproduce`: the figures of ``diffeosense reproduce``.

Matplotlib is imported by these modules only, through its object-oriented API (no pyplot), so
figures are drawn headless and never touch a global backend. This ``__init__`` imports nothing:
the command line can list, say, the shipped photographs without loading matplotlib.
"""

