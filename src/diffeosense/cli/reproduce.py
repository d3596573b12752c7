"""``diffeosense reproduce NAME --scale quick|paper``: the paper's figures and an HTML report."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import _options as _o

_EXAMPLES = """examples:
  diffeosense reproduce noisy-training --scale quick --out results/reproduce-quick
  diffeosense reproduce all --scale quick --workers 2 --out results/reproduce-quick
  diffeosense reproduce layerwise filter-spectra --scale quick --out results/reproduce-quick
  diffeosense reproduce noisy-training --scale paper --backend slurm --partition gpu --gpus 1 \\
      --time 720 --device cuda --data-root /data --out runs/paper-fig1
  diffeosense reproduce noisy-training --scale quick --data fashion-mnist --out results/fm
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.figure import list_figures
    from ..experiments.reproduce import scales

    FIGURES, SCALES = list_figures(), scales()

    p = subparsers.add_parser(
        "reproduce",
        help="reproduce a figure of the paper (runs, figures, self-contained HTML report)",
        description="Run the grid of one of the paper's figures through the sweep engine "
        "(resumable: re-run the same command to continue), draw the figures (PNG and SVG), write "
        "their tables, and write OUT/report.html: every figure with its table, the paper's "
        "claims with this run's verdict and the numbers, the presets, versions and this command. "
        "--scale quick runs small nets on the embedded MNIST digits on a laptop; --scale medium "
        "trains more nets, 3 seeds each, on the full Fashion-MNIST (an overnight run on 2 "
        "cores; Figs. 1, 3, 4); --scale paper is the paper's grid on CIFAR-10, meant for a GPU "
        "cluster. 'all': every figure with a preset at the scale. Figures available: "
        + ", ".join(FIGURES) + ".",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME", choices=[*FIGURES, "all"],
                   help="one or more figures (" + ", ".join(FIGURES) + "), or all")
    p.add_argument("--scale", choices=SCALES, default="quick",
                   help="quick (embedded MNIST, small nets, CPU), medium (full "
                   "Fashion-MNIST, 3 seeds, overnight on CPU) or paper (CIFAR-10, the paper's "
                   "recipe, GPU cluster); default quick")
    _o.add_output_options(p, out_help="output folder (report.html goes here)", formats=False,
                          plot_help=None, progress_help="print nothing while running")
    _o.add_device_option(p, "cpu", help="training/measuring device (default cpu)")
    _o.add_data_root_option(p)
    p.add_argument("--data", default=None,
                   help="run the presets' grid on this dataset instead of theirs (embedded "
                   "MNIST for quick, CIFAR-10 for paper). " + _o.DATA_SPEC_HELP)
    _o.add_data_options(p)
    _o.add_backend_options(p, workers_help="runs at once (default: the number of cores; "
                           "slurm: default array parallelism)")
    _o.add_fast_path_options(p, "fast training path (opt-in, for GPUs: other runs, other "
                             "folders)")
    p.add_argument("--compare", metavar="DIR", default=None,
                   help="the --out folder of another reproduction (another scale, say): the "
                   "report's claims table shows its verdicts and estimates beside this run's")
    p.add_argument("--dry-run", action="store_true",
                   help="list each figure's training runs (each once: figures share runs), "
                   "their folders under OUT/runs and status (done/partial/failed/new); run "
                   "nothing")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from ..experiments.reproduce import ReproduceOptions, reproduce

    _o.check_out(args.out)
    backend, workers, options = _o.backend_from_args(args)
    _o.check_device(args.device, backend)
    data = {k: v for k, v in {"name": args.data, **_o.data_options(args)}.items()
            if v is not None}
    train = _o.fast_path_options(args)
    opts = ReproduceOptions(backend=backend, workers=workers, device=args.device,
                            data_root=args.data_root, backend_options=options,
                            progress=not args.no_progress, data=data, train=train)
    # The command as typed (the report and reproduce.json show it), else its canonical form.
    command = "diffeosense " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ["reproduce"] else \
        f"diffeosense reproduce {' '.join(args.names)} --scale {args.scale} " \
        f"--out {shlex.quote(args.out)}"
    names = ["all"] if "all" in args.names else list(dict.fromkeys(args.names))
    if args.dry_run:
        from ..experiments.reproduce import plan

        rows = plan(names, args.scale, args.out, opts)
        runs = [r for r in rows if r["hash"] is not None]
        counts = {s: sum(r["status"] == s for r in runs) for s in dict.fromkeys(
            r["status"] for r in runs)}
        print(f"{len(runs)} runs in {args.out}/runs/ at scale {args.scale}: "
              + ", ".join(f"{n} {s}" for s, n in counts.items()))
        for r in rows:
            if r["hash"] is None:
                print(f"{r['figure']}: its units are not training runs (not listed)")
                continue
            shared = f"  (also {', '.join(r['shared_with'])})" if r["shared_with"] else ""
            print(f"{r['status']:8s} {r['hash']}  {r['figure']}: model={r['model']} "
                  f"dataset={r['dataset']} seed={r['seed']} noise={r['noise']} P={r['P']} "
                  f"epochs={r['epochs']} lr={r['lr']}{shared}"
                  + (f"  damaged: {r['problem']}" if r["problem"] else ""))
        return 0
    try:
        report = reproduce(names, args.scale, args.out, command, opts, compare=args.compare)
    except KeyboardInterrupt:
        from pathlib import Path

        runs = Path(args.out) / "runs"
        done = len(list(runs.glob("*/done"))) if runs.is_dir() else 0
        raise _o.interrupted(
            f"{done} finished run(s) are kept in {runs}/, an interrupted one resumes from its "
            f"last checkpoint: run the same command again to continue (the figures and "
            f"report.html are written once every run finished)") from None
    print(f"wrote {report}")
    return 0
