"""The paper's claims at the quick and the medium scale, side by side, judged with intervals
(diffeosense.experiments.verdicts), recomputed from the committed tables (no run needed):

    python docs/results/reproduce_medium/compare.py > docs/results/reproduce_medium/claims.md
"""
from pathlib import Path

from diffeosense._io import read_table
from diffeosense.experiments.figures import filter_spectra, layerwise, noisy_training

RESULTS = Path(__file__).parent.parent
SCALES = {"quick": RESULTS / "reproduce_quick", "medium": RESULTS / "reproduce_medium"}


def claims(folder: Path) -> list[tuple[str, dict]]:
    """(figure, claim) for Figs. 1, 3 and 4 from the tables of one reproduce folder."""
    runs = read_table(folder / "noisy_training/noisy_training_runs.csv")[0]
    out = [("Fig. 1", c) for c in noisy_training.claims(
        runs, noisy_training.correlation_table(runs))]
    out += [("Fig. 3", c) for c in layerwise.layerwise_claims(
        read_table(folder / "layerwise/layerwise.csv")[0])]
    out += [("Fig. 4", c) for c in filter_spectra.spectra_claims(
        read_table(folder / "filter_spectra/filter_spectra_homogeneous.csv")[0])]
    return out


by_scale = {s: claims(f) for s, f in SCALES.items()}
print("| figure | claim | quick: verdict | quick: estimate [95 % interval] "
      "| medium: verdict | medium: estimate [95 % interval] |")
print("| --- | --- | --- | --- | --- | --- |")
for (fig, q), (_, m) in zip(by_scale["quick"], by_scale["medium"], strict=True):
    assert q["text"] == m["text"]
    cells = [f"{c['verdict'] or 'cannot tell'} | {c['estimate'] or ''}" for c in (q, m)]
    print(f"| {fig} | {q['text']} | " + " | ".join(cells) + " |")
print()
print("Evidence (medium):")
print()
for fig, c in by_scale["medium"]:
    print(f"- {fig}, {c['text']} {c['evidence']}")
