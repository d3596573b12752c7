"""``diffeosense zoo``: many models, untrained or pretrained, measured on one dataset into one
table of D, G, R and the test error, and a figure of test error against R."""

from __future__ import annotations

import argparse

from . import _options as _o

_EXAMPLES = """examples:
  diffeosense zoo --models simplecnn lenet fc2 --data mnist-embedded --out runs/zoo-mnist
  diffeosense zoo --models torchvision:resnet18 torchvision:mobilenet_v3_small timm:resnet18 \\
      --data cifar10 --n-probes 200 --layers all --out runs/zoo-cifar
  diffeosense zoo --models torchvision:resnet18 torchvision:vgg11_bn --model-kw weights=DEFAULT \\
      --data folder:photos --resize 224 --crop 224 --normalize imagenet --out runs/zoo-pre
  diffeosense plot runs/zoo-cifar/models/*.csv --x relative-depth --out layers.png

Each model's table is written to OUT/models/ as it finishes; running the same command again
skips the finished models and retries the failed ones. Pretrained weights (--model-kw
weights=DEFAULT; for timm also weights=pretrained) are read from torch's and Hugging Face's
local caches (downloaded when online): a model whose weights are not there fails by name and
the others run (offline, HF_HUB_OFFLINE=1 spares timm's download retries). A pretrained
1000-class head on a dataset with other classes gets no test error
(NaN, with the reason in the table). The exit code is 1 when a model failed.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "zoo", help="measure D, G, R and the test error of many models on one dataset",
        description="Measure a list of models without training (random initialization, or "
        "pretrained weights) on the same probes of one dataset, with the same diffeos and "
        "noise: OUT/zoo.csv holds D, G, R (and standard errors) at the output, or at every "
        "layer with --layers all, and the test error of each model; OUT/zoo.png plots the "
        "test error against R; OUT/models/ holds one sensitivity table per model (for "
        "`diffeosense plot`); OUT/zoo.json each model's status.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC",
                   help=f"the models. {_o.model_spec_help()}")
    _o.add_model_kw_option(p)
    p.add_argument("--model-seed", type=int, default=0,
                   help="seed of every model's initialization (default 0)")
    p.add_argument("--data", default=None, help=f"dataset (default mnist-embedded). "
                   f"{_o.DATA_SPEC_HELP}")
    _o.add_data_root_option(p)
    p.add_argument("--no-download", action="store_true",
                   help="never try to download a missing dataset")
    _o.add_data_options(p)
    p.add_argument("--n-test", type=_o.count_or_all("test samples", 1, "1 test sample"), default=None, metavar="N|all",
                   help="test samples for the test error (default all of the test split)")
    _o.add_measure_options(p, help={"layers": "what to measure: output (default), all, "
                                    "kinds joined by '+', layer names or globs, re:PATTERN"})
    p.set_defaults(layers="output")
    _o.add_device_option(p)
    _o.add_output_options(p, out_help="the zoo folder", plot_help="skip zoo.png")
    p.set_defaults(func=run_zoo_cmd)


def run_zoo_cmd(args: argparse.Namespace) -> int:
    import json

    from ..experiments.zoo import run_zoo

    measure = _o.measure_options(args)
    layers, n_probes, seed = (measure.pop(k) for k in ("layers", "n_probes", "seed"))
    print(f"zoo of {len(args.models)} model(s) -> {args.out}", flush=True)
    z = run_zoo(args.models, out=args.out, data=args.data or "mnist-embedded",
                n_probes=n_probes, layers=layers, seed=seed,
                model_kwargs=_o.parse_model_kw(args.model_kw), model_seed=args.model_seed,
                measure_kwargs=measure, data_options=_o.data_options(args), n_test=args.n_test,
                device=args.device, data_root=args.data_root, download=not args.no_download,
                fmt=args.format, progress=not args.no_progress, log=lambda s: print(s, flush=True))
    for f in z.files.values():
        print(f"wrote {f}")
    if len(z.table) and not args.no_plot:
        from ..plots.zoo import plot_zoo

        png = z.out / "zoo.png"
        plot_zoo(z.table, path=png)
        print(f"wrote {png}")
    counts = {s: sum(o["status"] == s for o in z.outcomes) for s in ("done", "skipped", "failed")}
    print(json.dumps(counts))
    if z.failed:
        print(f"{len(z.failed)} model(s) failed: "
              + "; ".join(f"{o['model']}: {o['error']}" for o in z.failed))
        return 1
    return 0
