"""Write a small 3-channel dataset of real image statistics, offline: 32 x 32 RGB patches of
eight photographs shipped with scikit-image, labelled by the photograph they come from.

    python examples/photo_patches.py results/photo_patches.npz

Each photograph is resized (antialiased) so that its shorter side is 160 pixels; 300 training
and 125 test patches are cropped from it at random positions (seed 0): x [2400, 3, 32, 32] and
x_test [1000, 3, 32, 32] uint8, y / y_test the photograph's index (8 classes, chance error
7/8), both splits shuffled with the same seed. Train and test patches come from the same photographs and may overlap: a net can learn
the task by remembering the photographs, so it says nothing about generalization; it is here to
measure networks on natural-image patches (smooth, correlated pixels), not to train them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
          "hubble_deep_field", "retina", "colorwheel"]


def patches(size: int = 32, short_side: int = 160, n_train: int = 300, n_test: int = 125,
            seed: int = 0) -> dict[str, np.ndarray]:
    import skimage.data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"x": [], "y": [], "x_test": [], "y_test": []}
    for k, name in enumerate(PHOTOS):
        img = getattr(skimage.data, name)()[..., :3]
        h, w = img.shape[:2]
        s = short_side / min(h, w)
        img = resize(img, (round(h * s), round(w * s)), anti_aliasing=True, preserve_range=True)
        img = img.astype(np.uint8)
        for split, n in (("x", n_train), ("x_test", n_test)):
            i = rng.integers(0, img.shape[0] - size + 1, n)
            j = rng.integers(0, img.shape[1] - size + 1, n)
            out[split] += [img[a:a + size, b:b + size].transpose(2, 0, 1) for a, b in zip(i, j, strict=True)]
            out["y" if split == "x" else "y_test"] += [k] * n
    arrays = {key: np.stack(v) if key.startswith("x") else np.array(v, np.int64)
              for key, v in out.items()}
    # Shuffled (seeded): the first N test patches, a measurement's probes, mix the photographs.
    for x, y in (("x", "y"), ("x_test", "y_test")):
        order = rng.permutation(len(arrays[y]))
        arrays[x], arrays[y] = arrays[x][order], arrays[y][order]
    return arrays


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "photo_patches.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **patches())
    print(f"wrote {path}")
