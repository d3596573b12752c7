"""``diffeosense sweep CONFIG`` and ``diffeosense collect DIR``: sweeps as data, at the edge."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _options as _o


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of train+measure runs from a TOML/YAML file (resumable)",
        description="Expand a sweep file (a grid over models, datasets, seeds, training noise, "
        "P, epochs, lr and measurement options; see examples/sweep.toml) into runs, each "
        "trained and measured into its own hash folder under --out. Finished runs are skipped, "
        "interrupted ones resume from their checkpoints, a failing run is recorded with its "
        "traceback (error.txt in its folder) and the others go on. Exit status: the number of "
        "failed runs (0: all finished).",
    )
    p.add_argument("config", help="sweep file (.toml, or .yaml with pyyaml)")
    p.add_argument("--out", default=None,
                   help="sweep folder (default: the file's 'out', else runs/<file stem>)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, their hash folders and status (done/partial/failed/new); "
                   "run nothing")
    _o.add_backend_options(p)
    p.set_defaults(func=run_sweep_cmd)

    c = subparsers.add_parser(
        "collect",
        help="gather every finished run under a folder into one tidy table",
        description="Read every finished run (a folder with a 'done' marker) below DIR and "
        "write one tidy table, one row per run x stage x layer x view x channel, with the "
        "config columns: DIR/collected.csv by default.",
    )
    c.add_argument("dir", help="sweep folder")
    c.add_argument("--out", nargs="+", default=None,
                   help="output file(s), .csv and/or .parquet of different names (each has "
                   "its sidecar STEM.meta.json; default DIR/collected.csv)")
    c.set_defaults(func=collect_cmd)


def _status_line(o: dict) -> str:
    tail = f"  {o['error']}" if o["error"] else ""
    return f"{o['status']:8s} {o['hash']}  {o['seconds']:7.1f} s{tail}"


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from ..experiments.run import run_dir, run_status
    from ..experiments.sweep import expand, load_sweep, plan, run_sweep

    _o.check_out(args.out)
    spec = load_sweep(args.config)
    root = Path(args.out or spec.out or Path("runs") / Path(args.config).stem)
    if not args.out:
        _o.check_out(str(root), flag=f"the sweep folder ('out' of {args.config})")
    configs = expand(spec)
    backend, workers, options = _o.backend_from_args(args)
    if not args.dry_run:
        for device in dict.fromkeys(c.train.device for c in configs):
            _o.check_device(device, backend)
    rows = plan(configs, root)
    if args.dry_run:
        print(f"{len(rows)} runs in {root}/")
        for r in rows:
            print(f"{r['status']:8s} {r['hash']}  model={r['model']} dataset={r['dataset']} "
                  f"seed={r['seed']} noise={r['noise']} P={r['P']} epochs={r['epochs']} "
                  f"lr={r['lr']}  {r['folder']}"
                  + (f"  damaged: {r['problem']}" if r["problem"] else ""))
        return 0
    n_done = sum(r["status"] == "done" for r in rows)
    print(f"{len(rows)} runs in {root}/ ({n_done} already done), backend {args.backend}",
          flush=True)
    try:
        report = run_sweep(configs, root, backend, workers=workers,
                           on_result=lambda o: print(_status_line(o), flush=True), **options)
    except KeyboardInterrupt:
        done = sum(run_status(run_dir(c, root)) == "done" for c in configs)
        raise _o.interrupted(
            f"{done} of {len(configs)} runs are finished and kept in {root}/, the interrupted "
            f"ones resume from their last checkpoint: run the same command again to "
            f"continue") from None
    c = report.counts()
    print(f"{c['done']} ran, {c['skipped']} already done, {c['failed']} failed"
          + (f", {c['elsewhere']} running elsewhere (held by another live process: not run "
             f"here, not failed; run again once it finished)" if c["elsewhere"] else "")
          + (f" (tracebacks: {root}/<hash>/error.txt)" if c["failed"] else ""))
    return min(c["failed"], 100)


def collect_cmd(args: argparse.Namespace) -> int:
    from .._io import sidecar_path
    from ..experiments.collect import collect, save_table, unfinished_runs

    root = Path(args.dir)
    for out in args.out or []:
        _o.check_out(out, kind="file")
    df = collect(root)
    left = unfinished_runs(root)
    skipped = ""
    if left:
        by = {}
        for folder, status in left:
            by.setdefault(status, []).append(folder.name)
        skipped = (f"{len(left)} unfinished run(s) under {root} left out (no 'done' marker: "
                   + "; ".join(f"{k} {', '.join(v)}" for k, v in by.items())
                   + "); finish them with the sweep, then collect again")
    if df.empty:
        raise ValueError(f"no finished run under {root} (no '<hash>/done' marker); "
                         + (skipped or "run the sweep first"))
    outs = [Path(o) for o in args.out] if args.out else [root / "collected.csv"]
    sidecars = [sidecar_path(o).resolve() for o in outs]
    shared = sorted({str(s) for s in sidecars if sidecars.count(s) > 1})
    if shared:
        # One sidecar vouches for one table: the second write would orphan the first file.
        raise ValueError(f"--out files would share the sidecar {', '.join(shared)}: give the "
                         f".csv and the .parquet different names (e.g. t.csv, t_pq.parquet)")
    for out in outs:
        save_table(df, out, root=root)
        print(f"{out}: {len(df)} rows, {df['run'].nunique()} runs")
    if skipped:
        print(f"note: {skipped}")
    return 0
