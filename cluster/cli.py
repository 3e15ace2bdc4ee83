"""`bigbatch` command line: parse arguments, call trainer/ and cluster/, turn errors into exit codes.

Exit codes: 0 success, 1 training failure, 2 bad input (one line, no traceback),
128+N when signal N (Ctrl-C, SIGTERM) stopped the run after writing a checkpoint.
"""

import argparse
import dataclasses
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from bigbatch.cluster.cli_data import add_commands as add_data_commands
from bigbatch.cluster.cli_jobs import add_commands
from bigbatch.cluster.cli_report import add_commands as add_report_commands
from bigbatch.trainer.errors import RecipeError, TrainingFailed


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set optim.base_lr=0.2 (repeatable)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bigbatch", description="Large-minibatch image-classifier training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train a recipe")
    _recipe_args(train)
    train.add_argument("--out", help="run directory (default: runs/RECIPE_NAME)")
    train.add_argument("--resume", help="'auto' (newest valid checkpoint of --out, if any) or a checkpoint path")
    train.add_argument("--verbose", action="store_true", help="also show Ray's and Horovod's own output (worker "
                       "logs, placement groups, reports); by default it stays in Ray's log files")
    search = sub.add_parser("search", help="Single-Path One-Shot NAS: train the supernet, then search it by "
                            "evolution on the cluster; writes OUT/best.yaml, search.jsonl, report/")
    _recipe_args(search)
    search.add_argument("--out", help="search directory (default: runs/RECIPE_NAME-search)")
    search.add_argument("--resume", choices=("auto",), help="continue the search (and supernet) in --out")
    search.add_argument("--verbose", action="store_true", help="also show Ray's own output")
    show = sub.add_parser("show", help="print the resolved recipe and its derived values")
    _recipe_args(show)
    show.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="a finished or running run of this "
                      "recipe (e.g. at a small batch): its measured gradient noise scale, against this recipe's "
                      "global batch")
    recipes = sub.add_parser("recipes", help="list recipe files")
    recipes.add_argument("directory", nargs="?", default="recipes")
    models = sub.add_parser("models", help="list the model registry (with --speed: measured images/s)")
    models.add_argument("names", nargs="*", help="only these entries")
    models.add_argument("--speed", action="store_true", help="also measure inference images/s of each entry on "
                        "--device at --batch (eval mode, median of timed passes)")
    models.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    models.add_argument("--batch", type=int, default=1, help="images per timed pass (default 1)")
    sub.add_parser("keys", help="print every recipe key as a markdown table")
    COMMANDS.update(add_commands(sub, _recipe_args))
    COMMANDS.update(add_data_commands(sub, _recipe_args))
    COMMANDS.update(add_report_commands(sub))
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from bigbatch.cluster.launch import launch
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Interrupted

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.recipe).stem)
    try:
        summary = launch(recipe, out, resume=args.resume, verbose=args.verbose)
    except Interrupted as stop:
        print(f"bigbatch: stopped by signal {stop.signum}; checkpoint written to {stop.checkpoint}; "
              f"continue with: bigbatch train {args.recipe} --out {out} --resume auto", file=sys.stderr)
        return 128 + stop.signum
    top1 = "n/a" if summary["top1"] is None else f"{summary['top1']:.4f}"
    print(f"bigbatch: finished {out} at step {summary['step']}: top1 {top1} (best {summary['best_top1']:.4f}), "
          f"{summary['images_per_s']:.0f} images/s, {summary['elapsed_s']:.1f} s")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from bigbatch.cluster.search import run_search
    from bigbatch.trainer.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or Path("runs") / f"{Path(args.recipe).stem}-search")
    best = run_search(recipe, out, resume=args.resume, verbose=args.verbose)
    print(f"bigbatch: search finished in {out}: best {best['choices']} held-out top-1 {best['score']:.4f} "
          f"({best['macs'] / 1e6:.2f}M multiply-adds); train it: bigbatch train {out / 'best.yaml'}")
    if recipe.search.verify:
        tau = json.loads((out / "verify.json").read_text())["kendall_tau"]
        print(f"bigbatch: ranking check: Kendall's tau {tau:.3f} between supernet and stand-alone scores "
              f"({out / 'report' / 'search.md'})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bigbatch.trainer.data import layout_warning, load_data
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.recipe.plan import adaptive_table, elastic_table, make_plan

    recipe = load_recipe(args.recipe, args.overrides)
    root = recipe.data.root
    if recipe.data.name in ("folder", "shards") and "://" not in root and not Path(root).is_dir():
        # the data lives on the cluster (e.g. ImageNet): plan from the size the recipe declares
        print(f"bigbatch: {recipe.data.root or 'data.root'} is not on this machine; derived values use "
              f"data.train_examples = {recipe.data.train_examples}", file=sys.stderr)
        examples = recipe.data.train_examples
    else:
        data = load_data(recipe.data, recipe.seed, recipe.cluster.workers, 0)
        examples = len(data.train)
        if line := layout_warning(data, recipe.data.loader_workers):
            print(line, file=sys.stderr)
    plan = make_plan(recipe, examples)
    text = yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    text += yaml.safe_dump({"derived": plan.as_dict()}, sort_keys=False)
    if recipe.cluster.elastic:
        text += yaml.safe_dump({"elastic": elastic_table(recipe, examples)}, sort_keys=False)
    if recipe.train.batch_policy == "adaptive":
        text += yaml.safe_dump({"adaptive": adaptive_table(recipe, examples)}, sort_keys=False)
    if args.from_run:
        text += yaml.safe_dump({"gradient_noise_scale": measured_noise_scale(recipe, Path(args.from_run),
                                                                             plan.global_batch)},
                               sort_keys=False, width=100_000)
    print(text, end="")
    return 0


def measured_noise_scale(recipe, run_dir: Path, global_batch: int) -> dict:
    """`show --from`: what an earlier run measured, read against this recipe's global batch. B_simple belongs to
    a model, data and loss: a run of another model or data set is named on stderr, not refused."""
    from bigbatch.trainer.records.batch_advice import summary_entry
    from bigbatch.trainer.records.report import metrics_path, read_history

    entry = summary_entry(read_history(metrics_path(run_dir)), global_batch)
    if entry is None:
        raise RecipeError(f"{run_dir}: --from: no gradient noise scale in its step records (it needs more than "
                          f"one micro-batch per step: cluster.workers x train.accumulation_steps > 1, and "
                          f"track.noise_scale on)")
    earlier = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else {}
    for section in ("model", "data"):
        theirs = ((earlier or {}).get(section) or {}).get("name")
        ours = getattr(recipe, section).name
        if theirs and theirs != ours:
            print(f"bigbatch: --from {run_dir} trained {section}.name {theirs}, this recipe {ours}: its noise "
                  f"scale may not carry over", file=sys.stderr)
    return {"from": str(run_dir), **entry}


def cmd_recipes(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise RecipeError(f"{directory}: recipes directory not found")
    for path in sorted(directory.rglob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError:
                data = {"description": "(invalid YAML)"}
        description = data.get("description", "") if isinstance(data, dict) else ""
        print(f"{path.relative_to(directory)!s:32} {description}")
    return 0


FAMILY_ORDER = {"classic": 0, "efficient": 1, "nas": 2}


def cmd_models(args: argparse.Namespace) -> int:
    from bigbatch.trainer.errors import RecipeError
    from bigbatch.trainer.models import entries
    from bigbatch.trainer.models.complexity import measure
    from bigbatch.trainer.models.speed import device_name, images_per_second, resolve_speed_device

    chosen = sorted(entries(), key=lambda e: (FAMILY_ORDER.get(e.family, len(FAMILY_ORDER)), e.name))
    unknown = sorted(set(args.names) - {e.name for e in chosen})
    if unknown:
        raise RecipeError(f"bigbatch models: no catalogue entry {', '.join(unknown)} (see `bigbatch models`)")
    if args.batch < 1:
        raise RecipeError(f"--batch: expected a positive number of images, got {args.batch}")
    try:
        device = resolve_speed_device(args.device) if args.speed else None
    except (ValueError, RuntimeError) as e:
        raise RecipeError(str(e).splitlines()[0]) from None
    chosen = [e for e in chosen if not args.names or e.name in args.names]
    speed = f" {'img/s':>9}" if device else ""
    if device:
        print(f"images/s: inference at batch {args.batch} on {device} ({device_name(device)}), eval mode")
    print(f"{'name':22} {'family':9} {'params M':>9} {'MACs M':>9} {'px':>4}{speed}   {'published':>17}   "
          "description")
    warnings.simplefilter("ignore")  # timm's deprecation notes for old model names
    for entry in chosen:
        p = entry.published
        if p is None:
            print(f"{entry.name:22} {entry.family:9} {'':>9} {'':>9} {'':>4}{' ' * len(speed)}   {'':>17}   "
                  f"{entry.description}")
            continue
        params, macs = measure(entry.builder, p.classes, 3, p.resolution)
        measured = ""
        if device:
            model = entry.builder(num_classes=p.classes, in_chans=3, image_size=p.resolution).to(device)
            measured = f" {images_per_second(model, args.batch, 3, p.resolution, device):9.1f}"
        published = f"{p.params_m:g} / " + ("-" if p.macs_m is None else f"{p.macs_m:g}")
        print(f"{entry.name:22} {entry.family:9} {params / 1e6:9.2f} {macs / 1e6:9.0f} {p.resolution:4d}{measured}   "
              f"{published:>17}   {entry.description}", flush=True)
    print("\nparams and multiply-adds (MACs) counted here at the entry's resolution (1000 classes unless its "
          "source says otherwise);\npublished = params M / MACs M as the source states them (see "
          "trainer/models/catalogue.py).\nAlso: any torchvision:NAME or timm:NAME model (no pretrained weights).")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bigbatch.trainer.recipe.fields import REQUIRED, walk_fields
    from bigbatch.trainer.recipe.schema import Recipe

    print("| key | default | allowed | meaning |\n|---|---|---|---|")
    for key, f, _ in walk_fields(Recipe):
        default = "required" if f.default is REQUIRED and f.default_factory is REQUIRED else \
            repr(f.default_factory() if f.default is REQUIRED else f.default)
        m = f.metadata
        allowed = ", ".join(map(str, m["choices"])) if m.get("choices") else " ".join(
            s for s in (f">= {m['min']}" if m.get("min") is not None else "",
                        f"<= {m['max']}" if m.get("max") is not None else "",
                        f"< {m['below']}" if m.get("below") is not None else "") if s)
        print(f"| `{key}` | {default} | {allowed} | {m.get('help', '')} |")
    return 0


COMMANDS = {"train": cmd_train, "search": cmd_search, "show": cmd_show, "recipes": cmd_recipes, "models": cmd_models, "keys": cmd_keys}


def _with_recipe_file(message: str, recipe: str | None) -> str:
    """An error about a recipe key found after loading (the plan, the launch) names the recipe file too."""
    if recipe and re.match(r"[a-z_]+\.[a-z_.]+: ", message):
        return f"{recipe}: {message}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RecipeError as e:
        print(f"bigbatch: error: {_with_recipe_file(str(e), getattr(args, 'recipe', None))}", file=sys.stderr)
        return e.exit_code
    except TrainingFailed as e:
        print(f"bigbatch: training failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bigbatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
