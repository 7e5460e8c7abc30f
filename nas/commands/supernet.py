"""``hwnas train-supernet RECIPE`` and ``hwnas finetune RUN_DIR --epochs N``.

``train-supernet`` reads a recipe's ``space:`` and ``supernet:`` sections (see
:mod:`nas.supernet.config`; the top-level ``seed`` unless ``supernet.seed`` is
set) and trains into ``supernet.output`` (default ``<recipe output>/supernet``),
resuming from ``last.pt`` there if a previous run was interrupted.  The
resolved recipe is saved there as ``recipe.yaml``.  A search then uses it with
``accuracy: {supernet: run}``.  Under ``torchrun --nproc_per_node N -m nas.cli
train-supernet RECIPE`` the N processes train one supernet with
DistributedDataParallel (see :mod:`nas.supernet.train`); rank 0 writes the folder.

``finetune`` trains the networks exported by ``hwnas export RUN_DIR --top K``
(``RUN_DIR/export/<rank>/model.pt``) for a few more epochs and saves
``finetuned.pt`` (same format), ``finetune.json`` and the portable set
(``finetuned.pt2``, ``finetuned.onnx`` with metadata, the ``README.md`` model
card rewritten) beside each.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("train-supernet", help="train (or resume) a weight-sharing supernet for a recipe")
    p.add_argument("recipe", help="YAML recipe with space: and supernet: sections")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set supernet.epochs=3 (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming from the output folder's last.pt")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.set_defaults(func=run_train)

    f = sub.add_parser("finetune", help="fine-tune the architectures exported from a run")
    f.add_argument("run_dir", help="run folder holding export/<rank>/model.pt")
    f.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs")
    f.add_argument("--rank", type=int, action="append", default=None,
                   help="only this export rank (repeatable; default: all)")
    f.add_argument("--lr", type=float, default=0.001, help="peak learning rate (AdamW, one-cycle)")
    f.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    f.add_argument("--dataset", default=None,
                   help="dataset name (default: the run's supernet dataset, else digits)")
    f.add_argument("--root", default=None, help="dataset folder for non-embedded datasets")
    f.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    f.set_defaults(func=run_finetune)


def prepare_training(recipe_path, overrides=()):
    """Recipe -> (space, resolved SupernetConfig, output folder, seed, recipe)."""
    from nas.recipe import load_recipe
    from nas.supernet.config import parse_supernet_config
    from search_spaces import make_space

    recipe = load_recipe(recipe_path, overrides)
    where = recipe.source or "<recipe>"
    config = parse_supernet_config(recipe.supernet, where)
    try:
        space = make_space(recipe.space.name, **recipe.space.options)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where}: space: {exc.args[0] if exc.args else exc}") from None
    root = None
    if config.root is not None:
        root = Path(config.root).expanduser()
        root = root if root.is_absolute() else recipe.base_dir() / root
        if not root.exists():
            raise FileNotFoundError(f"{where}: supernet.root: dataset path {str(root)!r} does not exist")
        root = str(root.resolve())
    output = Path(config.output) if config.output else recipe.run_dir() / "supernet"
    seed = recipe.seed if config.seed is None else config.seed
    config = replace(config, root=root, output=str(output), seed=seed)
    recipe.supernet = config.to_dict()
    return space, config, output, seed, recipe


def run_train(args: argparse.Namespace) -> int:
    from nas.recipe import write_resolved
    from nas.supernet.distributed import process_group, world_from_env
    from nas.supernet.evaluate import select_device
    from nas.supernet.train import check_resumable, check_world_batch, train_supernet

    space, config, output, seed, recipe = prepare_training(args.recipe, args.overrides)
    # under torchrun: refused before any process joins a group (nothing to wait for)
    check_world_batch(config, world_from_env()[0])
    if not args.restart:
        check_resumable(space, config, output, seed)  # refuse before overwriting recipe.yaml
    with process_group(select_device(config.device)) as world:
        if world.main:  # one recipe.yaml, one console
            write_resolved(recipe, output)
            print(f"training a {space.name} supernet into {output} ({config.epochs} epochs, "
                  f"sandwich: largest + smallest + {config.num_random} random, "
                  f"distillation {'on' if config.distill else 'off'}"
                  + (f", {world.size} processes" if world.distributed else "") + ")")
        result = train_supernet(space, config, output, seed=seed, progress=not args.no_progress,
                                resume=not args.restart, world=world)
    if world.main:
        print(f"supernet: {result.checkpoint} ({len(result.history)} steps, {result.seconds:.1f} s this run)")
        print(f"use it with  accuracy: {{supernet: {result.checkpoint}}}"
              + ("  (or {supernet: run})" if not recipe_output_overridden(recipe, output) else ""))
    return 0


def recipe_output_overridden(recipe, output: Path) -> bool:
    return Path(output) != recipe.run_dir() / "supernet"


def finetune_dataset(run_dir: Path, dataset: str | None, root: str | None) -> tuple[str, str | None]:
    """The dataset to fine-tune on: explicit, else the run's supernet's, else digits."""
    from nas.sources.supernet import default_checkpoint
    from nas.supernet.train import load_checkpoint

    if dataset is not None:
        return dataset, root
    checkpoint = default_checkpoint(run_dir)
    if checkpoint.is_file():
        trained = load_checkpoint(checkpoint)["config"]
        return trained["dataset"], root if root is not None else trained["root"]
    return "digits", root


def run_finetune(args: argparse.Namespace) -> int:
    from nas.accuracy import TrainSettings, evaluate_accuracy, train_candidate
    from nas.data import load_dataset
    from nas.export import finetune_bundle, load_exported, save_model
    from nas.files import atomic_write_text

    run_dir = Path(args.run_dir)
    export_dir = run_dir / "export"
    folders = sorted((p for p in export_dir.glob("*") if (p / "model.pt").is_file() and p.name.isdigit()),
                     key=lambda p: int(p.name))
    if args.rank:
        wanted = set(args.rank)
        missing = sorted(wanted - {int(p.name) for p in folders})
        if missing:
            raise FileNotFoundError(f"{export_dir}: no exported model for rank(s) {missing}")
        folders = [p for p in folders if int(p.name) in wanted]
    if not folders:
        raise FileNotFoundError(f"{export_dir}: no exported models (run: hwnas export {run_dir} --top K)")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    dataset, root = finetune_dataset(run_dir, args.dataset, args.root)
    settings = TrainSettings(dataset=dataset, root=root, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr)
    rows = []
    for index, folder in enumerate(folders, start=1):
        model, arch, space = load_exported(folder)
        splits = load_dataset(dataset, int(space.input_shape(arch)[-1]), root, augment=settings.augment)
        before = evaluate_accuracy(model, splits.val)
        log.info("fine-tuning rank %s (%d/%d) on %s: %.2f%% before", folder.name, index, len(folders), dataset,
                 before)
        after = train_candidate(model.train(), splits, settings, args.seed,
                                on_epoch=lambda epoch, rank=folder.name: log.info(
                                    "fine-tuning rank %s: epoch %d/%d done", rank, epoch, args.epochs))
        meta = json.loads((folder / "arch.json").read_text()) if (folder / "arch.json").is_file() else {}
        predicted = meta.get("metrics", {}).get("accuracy")
        save_model(space, model, arch, folder / "finetuned.pt", f"finetuned {args.epochs} epochs")
        record = {"arch": str(arch), "dataset": dataset, "epochs": args.epochs, "lr": args.lr,
                  "predicted_accuracy": predicted, "exported_accuracy": before, "finetuned_accuracy": after}
        atomic_write_text(folder / "finetune.json", json.dumps(record, indent=2))
        # the same portable set as the export: torch.export + ONNX with metadata + model card
        record["onnx_max_abs_diff"] = finetune_bundle(space, model.eval(), arch, folder, record)
        atomic_write_text(folder / "finetune.json", json.dumps(record, indent=2))
        rows.append((folder.name, record))
    print(f"{'rank':>4}  {'predicted':>9}  {'exported':>8}  {'finetuned':>9}  arch")
    for rank, r in rows:
        predicted = "-" if r["predicted_accuracy"] is None else f"{r['predicted_accuracy']:.2f}"
        print(f"{rank:>4}  {predicted:>9}  {r['exported_accuracy']:>8.2f}  "
              f"{r['finetuned_accuracy']:>9.2f}  {r['arch']}")
    return 0
