"""The quick reproduction's claims judged with intervals (diffeosense.experiments.verdicts),
recomputed from the committed tables of this folder (no run needed):

    python docs/results/reproduce_quick/verdicts.py > docs/results/reproduce_quick/verdicts.md

With ``--record`` it also writes them into this folder's ``reproduce.json`` (key ``claims``,
with ``claims_source`` naming this script), so that ``reproduce ... --compare
docs/results/reproduce_quick`` sets them beside another run's; the run itself predates the
recording of claims.
"""
import json
import sys
from pathlib import Path

import pandas as pd

from diffeosense._io import read_table
from diffeosense.experiments.figures import filter_spectra, layerwise, noisy_training
from diffeosense.experiments.figures import scale_detection as sd

HERE = Path(__file__).parent
runs = read_table(HERE / "noisy_training/noisy_training_runs.csv")[0]
claims = [("Fig. 1", c) for c in noisy_training.claims(runs,
                                                       noisy_training.correlation_table(runs))]
claims += [("Fig. 3", c) for c in layerwise.layerwise_claims(
    read_table(HERE / "layerwise/layerwise.csv")[0])]
claims += [("Fig. 4", c) for c in filter_spectra.spectra_claims(
    read_table(HERE / "filter_spectra/filter_spectra_homogeneous.csv")[0])]
claims += [("Fig. 7", c) for c in sd.scale_1d_claims(
    read_table(HERE / "scale_detection/scale_detection_1d_exponents.csv")[0])]
summary = read_table(HERE / "scale_detection/scale_detection_2d_summary.csv")[0]
# The 2D correlations across nets (the per-layer table is not committed: its claim is left
# out); 1024 test pairs (the quick preset's).
no_layers = pd.DataFrame(columns=["model", "seed", "state", "kind", "depth", "D", "G"])
claims += [("Figs. 8-9", c) for c in sd.scale_2d_claims(summary, no_layers, 1024)[:3]]
print("| figure | claim | verdict | estimate [95 % interval] |")
print("| --- | --- | --- | --- |")
for fig, c in claims:
    print(f"| {fig} | {c['text']} | {c['verdict'] or 'cannot tell'} | {c['estimate'] or ''} |")
if "--record" in sys.argv[1:]:
    rec_path = HERE / "reproduce.json"
    rec = json.loads(rec_path.read_text())
    figures = {"Fig. 1": "noisy-correlations", "Fig. 3": "layerwise", "Fig. 4": "filter-spectra",
               "Fig. 7": "scale-detection-1d", "Figs. 8-9": "scale-detection-2d"}
    rec["claims"] = [{"text": c["text"], "verdict": c["verdict"], "evidence": c["evidence"],
                      "figure": figures[fig], "estimate": c["estimate"]} for fig, c in claims]
    rec["claims_source"] = ("re-judged from this folder's tables by verdicts.py (the run "
                            "predates the recording of claims in reproduce.json)")
    rec_path.write_text(json.dumps(rec, indent=2) + "\n")
