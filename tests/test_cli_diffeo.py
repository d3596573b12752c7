"""``diffeosense diffeo show`` and its figure helpers: files, sidecar, replay, clear errors."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from diffeosense.cli import build_parser, main
from diffeosense.diffeo import temperature_range
from diffeosense.plots.diffeo import (
    COLOURS,
    load_image,
    plot_diffeo_grid,
    temperature_ladder,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ["--size", "16", "--cuts", "2,3", "--inside", "2", "--below", "1", "--above", "1",
         "--dpi", "40"]


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_show_writes_png_and_sidecar(tmp_path, capsys):
    out = tmp_path / "figs" / "show.png"
    rc, stdout, _ = _run(["diffeo", "show", "--photo", "astronaut", *SMALL, "--out", str(out)], capsys)
    assert rc == 0 and str(out) in stdout
    assert out.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    h, w = matplotlib.image.imread(out).shape[:2]
    assert w > h > 50  # 2 rows x (1 + 4) columns: wider than tall
    side = json.loads(out.with_suffix(".json").read_text())
    cfg = side["config"]
    assert cfg["photo"] == "astronaut" and cfg["size"] == 16 and cfg["cuts"] == [2, 3]
    assert side["provenance"]["torch"] == torch.__version__
    for cut in (2, 3):  # columns: one below T_min, T_min .. T_max, one above T_max
        temps = cfg["temperatures"][str(cut)]
        tmin, tmax = temperature_range(16, cut)
        assert len(temps) == 4
        assert temps[0] < tmin and temps[-1] > tmax
        assert temps[1] == pytest.approx(tmin, rel=1e-12) and temps[2] == pytest.approx(tmax, rel=1e-12)
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in out.parent.iterdir()) == ["show.json", "show.pdf", "show.png",
                                                           "show.svg"]  # + vector twins


def test_sidecar_command_replays_the_same_config(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert _run(["diffeo", "show", *SMALL, "--seed", "7", "--interp", "nearest", "--out", str(out)],
                capsys)[0] == 0
    side = json.loads(out.with_suffix(".json").read_text())
    argv = shlex.split(side["command"])
    assert argv[:3] == ["diffeosense", "diffeo", "show"]
    args = build_parser().parse_args(argv[1:])
    for key in ("photo", "size", "inside", "below", "above", "seed", "interp", "out", "dpi"):
        assert getattr(args, key) == side["config"][key], key
    assert list(args.cuts) == side["config"]["cuts"]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_show_reads_an_image_file(tmp_path, capsys, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(40, 60, channels), dtype=np.uint8).squeeze()
    src = tmp_path / f"in_{mode}.png"
    Image.fromarray(pixels, mode=mode).save(src)
    out = tmp_path / "out.png"
    rc, _, err = _run(["diffeo", "show", "--image", str(src), *SMALL, "--out", str(out)], capsys)
    assert rc == 0, err
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["config"]["image"] == str(src)
    img = load_image(src, size=16)
    assert img.shape == ((1 if mode == "L" else 3), 16, 16)


def test_load_image_crops_the_centre_and_keeps_values(tmp_path):
    from PIL import Image

    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :20, 0] = pixels[:, 60:, 0] = 255  # red bands left and right, cropped away
    pixels[:, 20:60, 2] = 200  # a blue centre square
    Image.fromarray(pixels).save(tmp_path / "bands.png")
    img = load_image(tmp_path / "bands.png", size=8)
    assert img.shape == (3, 8, 8)
    assert torch.allclose(img[2], torch.full((8, 8), 200 / 255), atol=1e-6)
    assert img[0].abs().max() < 1e-6 and img[1].abs().max() < 1e-6
    photo = load_image(photo="chelsea", size=24)
    assert photo.dtype == torch.float32 and photo.shape == (3, 24, 24)
    assert 0 <= photo.min() and photo.max() <= 1 and photo.std() > 0.05


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image", "does/not/exist.png"], "image file not found: does/not/exist.png"),
        (["--out", "x.jpg"], "--out must end in .png"),
        (["--size", "2"], "--size must be >= 4"),
        (["--inside", "1"], "need inside >= 2"),
        (["--size", "4", "--cuts", "9"], "natural range is empty"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["diffeo", "show", *argv], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("diffeosense diffeo: error:") and message in err
    assert not list(tmp_path.rglob("*.png"))


def test_unreadable_image_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    rc, _, err = _run(["diffeo", "show", "--image", str(bad), "--out", str(tmp_path / "o.png")], capsys)
    assert rc == 2 and "could not read" in err and str(bad) in err


@pytest.mark.parametrize("argv", [["--cuts", "1,3"], ["--cuts", "a,b"], ["--photo", "nope"],
                                  ["--interp", "cubic"], ["--image", "x.png", "--photo", "cat"]])
def test_argparse_rejects_bad_options_with_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["diffeo", "show", *argv])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    for argv in (["diffeo", "--help"], ["diffeo", "show", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "show" in text
    for option in ("--image", "--photo", "--size", "--cuts", "--inside", "--below", "--above",
                   "--seed", "--interp", "--out", "--dpi"):
        assert option in text
    assert "chelsea" in text and "T_min" in text


def test_temperature_ladder_is_log_spaced_through_the_natural_range():
    temps = temperature_ladder(32, 3, inside=5, below=2, above=1)
    tmin, tmax = temperature_range(32, 3)
    assert len(temps) == 8
    ratios = np.diff(np.log(temps))
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 0
    assert temps[2] == pytest.approx(tmin, rel=1e-12) and temps[6] == pytest.approx(tmax, rel=1e-12)


def test_grid_frames_mark_the_natural_range():
    cuts = [2, 4]
    temps = [temperature_ladder(20, c, inside=3, below=1, above=1) for c in cuts]
    fig = plot_diffeo_grid(torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(0)),
                           cuts, temps)
    axes = np.array(fig.axes).reshape(2, 6)
    import matplotlib.colors as mcolors

    expected = ["original", "below", "inside", "inside", "inside", "above"]
    for row in axes:
        for ax, where in zip(row, expected, strict=True):
            colour = ax.spines["top"].get_edgecolor()
            assert mcolors.to_hex(colour) == COLOURS[where]
    # Panel images: the original first, then deformations of growing size along the row.
    row = [np.asarray(ax.get_images()[0].get_array(), dtype=float) for ax in axes[0]]
    diffs = [np.abs(im - row[0]).mean() for im in row[1:]]
    assert np.all(np.diff(diffs) > 0)


def test_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cuts must be integers >= 2"):
        plot_diffeo_grid(torch.rand(3, 8, 8), [1], [1e-3])
    with pytest.raises(ValueError, match="one list per cut"):
        plot_diffeo_grid(torch.rand(3, 8, 8), [2, 3], [[1e-3], [1e-3, 2e-3]])
    with pytest.raises(ValueError, match="image must be float"):
        plot_diffeo_grid(torch.zeros(3, 8, 8, dtype=torch.uint8), [2], [1e-3])
    with pytest.raises(ValueError, match="give exactly one"):
        load_image()
