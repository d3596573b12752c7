"""The CLI's option groups, each defined once and reused by every command that takes it.

* measurement options (:func:`add_measure_options`, :func:`measure_options`): beside the
  fields of :class:`~diffeosense.sensitivity.MeasureConfig` (one flag, type, choices and help
  per field), for ``measure`` (all of them) and ``pooling`` (a subset);
* backend options (:func:`add_backend_options`, :func:`backend_from_args`): where the units
  of ``sweep``, ``reproduce`` and ``scale-detection-2d`` run, one set of names;
* model/data source options (:func:`add_source_options`): checkpoint or registered model,
  dataset, its folder, and how its images are served (:func:`add_data_options`: resize,
  crop, normalization, the :class:`~diffeosense.data.DataConfig` fields every command with
  ``--data`` takes);
* output, progress and device options (:func:`add_output_options`,
  :func:`add_device_option`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class _Opt:
    """One flag of a config field: ``field`` of the config, the argparse ``flag`` and its
    keyword arguments (``default`` is the config's unless given here)."""

    field: str
    flag: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _output_key(value: str) -> str | int:
    """``--output``: a tuple index when it is an integer, else a dict key."""
    return int(value) if value.lstrip("-").isdigit() else value


def _max_memory(value: str) -> str | None:
    """``--max-memory``: ``auto``, ``none`` or a size (checked here: a clear parse error)."""
    from .._memory import parse_bytes

    if value.lower() in ("auto", "none"):
        return None if value.lower() == "none" else "auto"
    try:
        parse_bytes(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _measure_opts() -> dict[str, _Opt]:
    from .._stats import DENOMINATORS
    from ..sensitivity import BATCHNORMS, STATISTICS

    opts = [
        _Opt("layers", "--layers", dict(
            help="'all', 'modules', kinds joined by '+' (conv+activation), comma-separated "
            "layer names or globs ('layer1.*'), or a regular expression 're:PATTERN' matching "
            "whole names (default all)")),
        _Opt("n_probes", "--n-probes", dict(
            type=int, help="test images used (default 500; on a scale-detection task taken "
            "alternately from its two classes)")),
        _Opt("batch_size", "--batch-size", dict(
            type=int, help="probes per forward pass; does not change the result (default 128)")),
        _Opt("max_memory", "--max-memory", dict(
            type=_max_memory, help="memory the measurement may take on its device, e.g. 4GB; "
            "the batch size is lowered until the estimated peak fits (results do not change); "
            "'auto' (default): half of the device's free memory; 'none': no limit")),
        _Opt("perturbation", "--perturbation", dict(
            default=None, help="perturbation spec, e.g. diffeo or diffeo:cut=3,displacement=1.0 "
            "(default: the paper's diffeo, 1 px displacement, cut 3; for the scale-detection "
            "data, the task's move, pixel-move)")),
        _Opt("seed", "--seed", dict(
            type=int, default=0, help="seed of diffeos and noise (default 0)")),
        _Opt("noise_match", "--noise-match", dict(
            choices=["sample", "batch"],
            help="noise norm matched per image (default) or to the batch mean")),
        _Opt("noise_rectify", "--noise-rectify", dict(
            action="store_true", help="use rectified (non-negative) noise directions")),
        _Opt("denominator", "--denominator", dict(
            choices=list(DENOMINATORS),
            help="E||f(x1)-f(x2)||^2 convention: streaming (= pairs-excl-diag, unbiased; "
            "default) or pairs-incl-diag (the authors' cdist().mean(), x (N-1)/N)")),
        _Opt("statistic", "--statistic", dict(
            choices=list(STATISTICS),
            help="numerator over probes, Delta = f(tau x) - f(x): mean of ||Delta||^2 "
            "(default), median of ||Delta||^2 over probes, or component-median = "
            "sum_j median_i Delta_ij^2 (the authors' median; memory n_probes x size)")),
        _Opt("batchnorm", "--batchnorm", dict(
            choices=list(BATCHNORMS),
            help="BatchNorm statistics: eval = running statistics, the model as given "
            "(default); batch = each of x, tau x, x + eta normalized by its own statistics "
            "over all probes (the authors' convention at initialization; --batch-size is then "
            "ignored)")),
        _Opt("probe_noise", "--noise", dict(
            type=float, dest="noise",
            help="measure on probes corrupted by Gaussian noise of this L2 norm, the "
            "corruption of `train --noise` (default 0: clean probes)")),
        _Opt("channels", "--channels", dict(
            action="store_true",
            help="also per-channel rows and the channel-averaged representation")),
        _Opt("output", "--output", dict(
            type=_output_key, metavar="KEY|INDEX",
            help="for a model with several outputs (a dict or tuple), the one measured "
            "(default: the dict's 'out', else its first value; a tuple's first; a warning "
            "when that chose among several)")),
        _Opt("drop_repeats", "--drop-repeats", dict(
            action="store_true",
            help="drop the rows of a layer that repeats the one before it (same D and G: a "
            "flatten, a BatchNorm at initialization, the last layer before output)")),
        _Opt("method", "--method", dict(
            choices=["auto", "fx", "hooks"],
            help="layer discovery: torch.fx, forward hooks, or fx with hook fallback")),
    ]
    return {o.field: o for o in opts}


def _dest(opt: _Opt) -> str:
    return opt.kwargs.get("dest", opt.flag.lstrip("-").replace("-", "_"))


def add_measure_options(parser: argparse.ArgumentParser, only: list[str] | None = None, *,
                        help: dict[str, str] | None = None,
                        types: dict[str, Any] | None = None) -> None:
    """Add the flags of :class:`~diffeosense.sensitivity.MeasureConfig`'s fields (``only``:
    those fields, in that order) to ``parser``; ``help`` and ``types`` replace a field's help
    text or type for one command."""
    from ..sensitivity import MeasureConfig

    defaults = {f.name: f.default for f in fields(MeasureConfig)}
    opts = _measure_opts()
    for name in only or list(opts):
        opt = opts[name]
        kw = {"default": defaults[name], **opt.kwargs}
        if help and name in help:
            kw["help"] = help[name]
        if types and name in types:
            kw["type"] = types[name]
        parser.add_argument(opt.flag, **kw)


def measure_options(args: argparse.Namespace, only: list[str] | None = None) -> dict[str, Any]:
    """The :class:`~diffeosense.sensitivity.MeasureConfig` fields given by ``args`` (those
    added by :func:`add_measure_options` with the same ``only``), by field name; ``layers``
    split at commas into a list of layer names."""
    opts = _measure_opts()
    out = {name: getattr(args, _dest(opts[name])) for name in only or list(opts)}
    if isinstance(out.get("layers"), str):
        out["layers"] = layers_option(out["layers"])
    return out


def layers_option(spec: str) -> str | list[str]:
    """A ``--layers``-style value: a selection name (``all``, ``relu``, ...) or a regular
    expression ``re:...`` (commas and all) as is, or a comma-separated list of layer names
    and globs split into a list."""
    if spec.startswith("re:") or "," not in spec:
        return spec
    return [s.strip() for s in spec.split(",") if s.strip()]


def count_or_all(plural: str, minimum: int, at_least: str | None = None):
    """An argparse type for ``N|all``: a whole number of ``plural`` (at least ``minimum``;
    ``at_least`` words that bound, default ``"<minimum> <plural>"``), or ``all`` -> None."""

    def parse(value: str) -> int | None:
        if value.strip().lower() == "all":
            return None
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {plural} or 'all', got "
                                             f"{value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(
                f"need at least {at_least or f'{minimum} {plural}'}, got {n}")
        return n

    return parse


#: ``--n-probes`` that also takes ``all`` (-> ``None``); at least 2.
n_probes_or_all = count_or_all("probes", 2)


def interrupted_units(out) -> Exception:
    """What an experiment of units (``scale-detection``, ``-2d``) raises on Ctrl-C."""
    return interrupted(f"the finished units are kept under {out}/, an interrupted one "
                       f"resumes from its last checkpoint: run the same command again to "
                       f"continue")


# ------------------------------------------------------------------ backends
BACKENDS = ("local", "ray", "slurm")
# backend -> its options: (dest, flag, argparse keyword arguments)
_BACKEND_OPTIONS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "ray": [
        ("address", "--address", dict(
            default=None,
            help="Ray cluster address ('auto', 'host:port'); default: start a local Ray")),
        ("cpus_per_run", "--cpus-per-run", dict(
            type=int, default=1, help="CPUs per Ray task (default 1)")),
    ],
    "slurm": [
        ("partition", "--partition", dict(default=None, help="SLURM partition")),
        ("time_min", "--time", dict(
            type=int, default=60, help="time limit of each run in minutes (default 60)")),
        ("gpus", "--gpus", dict(type=int, default=0, help="GPUs per run (default 0)")),
        ("cpus", "--cpus", dict(type=int, default=1, help="CPUs per run (default 1)")),
        ("mem_gb", "--mem-gb", dict(type=float, default=None, help="memory per run in GB")),
        ("array_parallelism", "--array-parallelism", dict(
            type=int, default=None,
            help="array tasks running at once (default --workers, else SLURM's)")),
        ("cluster", "--cluster", dict(
            choices=["slurm", "local"], default=None,
            help="submitit cluster (default slurm, needs sbatch; 'local' runs the same jobs as "
            "local subprocesses)")),
    ],
}


def add_backend_options(parser: argparse.ArgumentParser, *, workers_help: str | None = None
                        ) -> None:
    """``--backend``, ``--workers`` and the Ray and SLURM options (``sweep``'s spellings)."""
    parser.add_argument(
        "--backend", choices=list(BACKENDS), default="local",
        help="where runs execute: local process pool (default), Ray (pip install "
        "'diffeosense[ray]') or SLURM via submitit (pip install 'diffeosense[slurm]')")
    parser.add_argument(
        "--workers", type=int, default=None,
        help=workers_help or "local: runs at once (default: the number of cores; each gets "
        "cores/workers threads); slurm: default array parallelism")
    for backend, options in _BACKEND_OPTIONS.items():
        g = parser.add_argument_group(backend)
        for dest, flag, kw in options:
            g.add_argument(flag, dest=dest, **kw)


def backend_from_args(args: argparse.Namespace) -> tuple[str, int | None, dict[str, Any]]:
    """``(backend, workers, backend_options)`` for
    :func:`~diffeosense.experiments.sweep.run_sweep`: the options of the chosen backend only."""
    options = {dest: getattr(args, dest) for dest, _, _ in _BACKEND_OPTIONS.get(args.backend, [])}
    return args.backend, args.workers, options


# ------------------------------------------------------------------ sources, output, device
def model_spec_help() -> str:
    """What --model takes: one text for every command (the grammar is
    :mod:`diffeosense.models.specs`)."""
    from ..models import list_models

    return (f"A model is a registered name ({', '.join(list_models())}), torchvision:NAME, "
            "timm:NAME (pip install 'diffeosense[timm]'), FILE.py:FACTORY or "
            "package.module:FACTORY (a function or class; given in_channels/num_classes when "
            "it takes them); options with --model-kw, pretrained weights with --model-kw "
            "weights=DEFAULT (torchvision) / weights=pretrained (timm), from the libraries' "
            "local caches")


def parse_model_kw(items: list[str] | None) -> dict[str, Any]:
    """``--model-kw KEY=VALUE ...``: values parsed as JSON, else kept as strings
    (``pooling=avg``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model-kw expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_model_kw_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-kw", nargs="*", metavar="KEY=VALUE",
                        help="model options, values parsed as JSON (e.g. depth=4 pooling=avg, "
                        "weights=DEFAULT)")


def add_source_options(parser: argparse.ArgumentParser, *, model_first: bool = True,
                       model_help: str, data_help: str) -> None:
    """``--checkpoint`` or ``--model`` (one required), ``--model-kw``, ``--weights``,
    ``--model-seed``, ``--trust-pickle``, ``--data``, ``--data-root``, ``--no-download`` and
    the image options (see :mod:`diffeosense.sources`)."""
    src = parser.add_mutually_exclusive_group(required=True)
    pair = [("--model", f"{model_help}. {model_spec_help()}"),
            ("--checkpoint", "a checkpoint written by `diffeosense train`, or a TorchScript "
             "(torch.jit.save) or torch.export (torch.export.save) file")]
    for flag, text in pair if model_first else pair[::-1]:
        src.add_argument(flag, help=text)
    add_model_kw_option(parser)
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="a state dict file loaded into --model (its architecture)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="let --checkpoint be a pickled nn.Module (torch.save(model)); "
                        "unpickling runs code from the file: only for files you trust")
    parser.add_argument("--model-seed", type=int, default=0,
                        help="seed of the initialization for --model (default 0)")
    parser.add_argument("--data", default=None, help=f"{data_help}. {DATA_SPEC_HELP}")
    add_data_root_option(parser)
    parser.add_argument("--no-download", action="store_true",
                        help="never try to download a missing dataset")
    add_data_options(parser)


# What --data takes: one text for every command (the grammar is diffeosense.data.specs).
DATA_SPEC_HELP = (
    "A dataset is a name (mnist-embedded: no download; cifar10, mnist, fashion-mnist, svhn: "
    "read from --data-root, fashion-mnist also from the Debian package dataset-fashion-mnist, "
    "else downloaded), a task (scale-detection-2d[:size=28,xi=14,gap=2], "
    "scale-detection-1d[:...]), folder:PATH (images in class subfolders, or in PATH/train/ "
    "and PATH/test/; one folder is split 80/20 with a fixed seed), idx:PATH (MNIST-format "
    "idx files, .gz or not), or a file PATH.npz / PATH.npy / PATH.pt (arrays x, y, x_test, "
    "y_test; without y: measure only)")

# DataConfig field -> (flag, argparse keyword arguments); defaults None: "not given", the
# defaults live in DataConfig (and a checkpoint's own dataset keeps its values).
_DATA_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "resize": ("--resize", dict(
        type=int, metavar="N", help="resize every image so that its shorter side is N pixels "
        "(aspect kept, antialiased), before --crop (default: as stored)")),
    "crop": ("--crop", dict(
        type=int, metavar="N", help="keep the central N x N pixels of every image (default: "
        "all)")),
    "normalize": ("--normalize", dict(
        choices=["dataset", "none", "imagenet"], help="per-channel normalization: dataset = "
        "mean and std of the training set (default, as every dataset), none = pixel values "
        "in [0, 1] (floats as stored), imagenet = ImageNet's mean and std (pretrained nets)")),
}


def add_fast_path_options(parser: argparse.ArgumentParser, title: str) -> None:
    """``--precision``, ``--channels-last``, ``--compile``: the opt-in fast-path fields of
    :class:`~diffeosense.train.TrainConfig` (default None: not given)."""
    f = parser.add_argument_group(title)
    f.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="bf16: the training forward and loss under bfloat16 autocast (fp32 "
                   "weights and optimizer; the loss checked once per epoch, not per batch); "
                   "default fp32")
    f.add_argument("--channels-last", action="store_true", default=None,
                   help="the model and 4D batches in channels_last memory format")
    f.add_argument("--compile", action="store_true", default=None,
                   help="the training forward through torch.compile")


def fast_path_options(args: argparse.Namespace) -> dict[str, Any]:
    """The fast-path fields given by :func:`add_fast_path_options`'s flags, by field name."""
    return {k: getattr(args, k) for k in ("precision", "channels_last", "compile")
            if getattr(args, k) is not None}


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--resize``, ``--crop``, ``--normalize``: the image fields of
    :class:`~diffeosense.data.DataConfig`, for every command that takes ``--data``."""
    g = parser.add_argument_group("data", "how the images of --data are served")
    for name, (flag, kw) in _DATA_OPTIONS.items():
        g.add_argument(flag, dest=name, default=None, **kw)


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`add_data_options` values given on the command line, by DataConfig field
    (None: not given)."""
    return {name: getattr(args, name) for name in _DATA_OPTIONS}


def model_source(args: argparse.Namespace):
    """The :class:`~diffeosense.sources.ModelSource` that the source options name."""
    from ..sources import resolve_model

    return resolve_model(checkpoint=args.checkpoint, model=args.model,
                         model_seed=args.model_seed, model_kwargs=parse_model_kw(args.model_kw),
                         weights=args.weights, allow_pickle=args.trust_pickle)


def fit_hint(source) -> str:
    """What :func:`diffeosense.sources.check_fits` suggests for a
    :class:`~diffeosense.sources.ModelSource`: its checkpoint's own dataset, or another --data."""
    if source.train_config is not None:
        return (f"omit --data to use the checkpoint's own dataset "
                f"{source.train_config.data.name!r}")
    return "choose a --data whose samples it takes"


def add_data_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None, help="folder of the torchvision datasets")


def add_output_options(parser: argparse.ArgumentParser, *, out_help: str = "output folder",
                       out_default: str | None = None, formats: bool = True,
                       plot_help: str | None = "skip the PNG",
                       progress_help: str = "no progress bar") -> None:
    """``--out`` (required unless ``out_default``), ``--format``, ``--no-plot`` (unless
    ``plot_help`` is None), ``--no-progress``."""
    if out_default is None:
        parser.add_argument("--out", required=True, help=out_help)
    else:
        parser.add_argument("--out", default=out_default, help=out_help)
    if formats:
        parser.add_argument("--format", choices=["csv", "parquet", "json"], default="csv",
                            help="table format (default csv)")
    if plot_help is not None:
        parser.add_argument("--no-plot", action="store_true", help=plot_help)
    parser.add_argument("--no-progress", action="store_true", help=progress_help)


def add_device_option(parser: argparse.ArgumentParser, default: str | None = None,
                      help: str | None = None) -> None:
    """``--device``; ``default=None``: resolved by :func:`diffeosense.sources.resolve_device`
    (cuda if available, else cpu)."""
    parser.add_argument("--device", default=default, help=help or (
        "cpu, cuda, ... (default: cuda if available)" if default is None
        else f"cpu, cuda, cuda:N (default {default})"))


def check_device(device: str | None, backend: str = "local") -> None:
    """Before anything is made: a ``--device`` this machine lacks (``cuda`` without a GPU)
    is one clear error. Runs on a cluster (``backend`` ray or slurm) are not checked here:
    their devices are the cluster's, not the driver's."""
    from .._validate import available_device

    if backend == "local":
        available_device(device)


def check_out(path: str | None, kind: str = "folder", flag: str = "--out") -> None:
    """Before anything is printed or made: ``--out`` is not a file where a folder is meant
    (or a folder where a file is meant), and nothing above it is a file; the error names the
    path as the user gave it (:func:`diffeosense._io.check_output_path`)."""
    if path is not None:
        from .._io import check_output_path

        check_output_path(path, kind=kind, flag=flag)


def interrupted(text: str):
    """The :class:`~diffeosense.cli.Interrupted` a command raises on Ctrl-C."""
    from . import Interrupted

    return Interrupted(text)
