"""Export the best architectures of a finished run.

For each of the top-K Pareto architectures, ``RUN_DIR/export/<rank>/`` gets:

* ``arch.txt`` (canonical string) and ``arch.json`` (decisions, metrics, features,
  preprocessing, latency source)
* ``model.pt2``: a ``torch.export`` program with a dynamic batch dimension;
  plain PyTorch loads it (``torch.export.load(path).module()``) without hwnas
* ``model.onnx``: dynamic batch, metadata (arch, space, input, preprocessing,
  accuracy, latency, device where known), verified against PyTorch with ONNX
  Runtime at batch 1 and 4
* ``model.int8.onnx`` when the arch runs layers in int8 (a space's precision
  axis): ``model.onnx`` with those layers statically quantized, calibrated on
  the accuracy source's training slice (the network whose accuracy and latency
  the search reported); its agreement with the float model is in ``arch.json``
* ``model.pt``: ``{"arch", "space", "space_options", "state_dict", "weights"}``
  (plain tensors and strings: ``torch.load(..., weights_only=True)`` reads it;
  :func:`load_exported` rebuilds the hwnas model from it)
* ``README.md``: a model card (preprocessing as numbers, metrics, how to load
  each file without hwnas; for ``mbv3`` the timm code that rebuilds the network)
* whatever the space adds (``SearchSpace.export_extras``): ``hybrid_slm``
  writes ``config.json``, which rebuilds the model with
  ``search_spaces.slm.export.load_slm(folder)`` alone

``torch.export`` rather than TorchScript: ``torch.jit.script`` cannot compile
the nb201 cell (a generator with an ``if``), ``torch.jit.trace``/``script``
are deprecated in PyTorch 2.x, and ``torch.export`` handles every space
(mbv3, mobiledet, nb201, fbnet, hybrid_slm) with a symbolic batch size.

Export needs only the run folder (its resolved ``recipe.yaml`` and
``front.json``) and the run's accuracy source: it never builds the latency
source (a remote device may be offline) or opens the study.  Weights come
from the accuracy source when it has them (``trained_model(arch)``:
re-training with the search's seed, or extraction from a supernet); otherwise
the checkpoint holds the initialisation and says so.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from hardware.onnx_io import export_onnx, ort_session, verify_onnx
from hardware.store import MeasurementStore
from nas.files import atomic_write_bytes, atomic_write_text
from nas.recipe import load_recipe
from nas.sources import ACCURACY_SOURCES, RunContext, make_source
from search_spaces import SearchSpace, make_space
from search_spaces.slm.export import save_checkpoint

#: batch sizes the ONNX and ``torch.export`` files are checked at: 1 (what latency
#: is measured at) and 4 (proves the batch dimension really is dynamic)
VERIFY_BATCHES = (1, 4)
#: a saved-and-reloaded ``torch.export`` program runs the same kernels as the
#: eager model, so anything beyond float noise means a broken export
PROGRAM_TOLERANCE = 1e-4
EMBEDDED_GREY = {"digits": "8x8 grey digits, pixel values 0..16 divided by 16 -> [0, 1]",
                 "digits_distorted": "32x32 grey canvas in [0, 1]"}


@dataclass
class Exported:
    rank: int
    arch: str
    folder: Path
    onnx_max_abs_diff: float
    weights: str
    program_max_abs_diff: float = 0.0


def export_verified_onnx(space: SearchSpace, model, arch: Any, path: str | Path, batch_size: int = 1,
                         metadata: Mapping[str, Any] | None = None) -> float:
    """Write ``model`` as ONNX with a dynamic batch dimension (and ``metadata`` as
    ``metadata_props``) to ``path``; return the max abs difference between ONNX
    Runtime and PyTorch on the space's example input at ``batch_size`` and at 4."""
    model = model.eval()
    inputs, outputs = space.onnx_names
    data = export_onnx(model, space.example_input(arch, batch_size), input_names=inputs,
                       output_names=outputs, dynamic_batch=True)
    if metadata:
        data = _with_metadata(data, metadata)
    atomic_write_bytes(path, data)
    return max(verify_onnx(Path(path), model, space.example_input(arch, b))
               for b in sorted({batch_size, *VERIFY_BATCHES}))


def _with_metadata(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    for key, value in metadata.items():
        if value is None:
            continue
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, default=str)
    return proto.SerializeToString()


def export_program(space: SearchSpace, model, arch: Any, path: str | Path,
                   tolerance: float = PROGRAM_TOLERANCE) -> float:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with a symbolic batch
    dimension; reload the written bytes and return their max abs difference from
    ``model`` at the :data:`VERIFY_BATCHES`.  Raises ``RuntimeError`` above ``tolerance``."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    # traced at batch 2: torch.export specialises a size-1 dimension to the constant 1
    program = torch.export.export(model, (space.example_input(arch, 2),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    diff = 0.0
    with torch.no_grad():
        for b in VERIFY_BATCHES:
            example = space.example_input(arch, b)
            diff = max(diff, float((loaded(example) - model(example)).abs().max()))
    if diff > tolerance:
        raise RuntimeError(f"torch.export of {arch}: the reloaded program differs from PyTorch by "
                           f"{diff:.3g} (> {tolerance:g})")
    return diff


def preprocessing(space: SearchSpace, arch: Any, dataset: str | None,
                  accuracy_kind: str | None = None) -> dict[str, Any]:
    """What the input must look like, as numbers: the exact steps :mod:`nas.data`
    applies for ``dataset`` (``None``: the run's accuracy source names none)."""
    from nas.data import MEAN, STD

    example = space.example_input(arch, 1)
    shape = ["batch", *example.shape[1:]]
    if example.dtype == torch.int64:
        vocab = int(getattr(arch, "vocab", 0) or 0) or None
        steps = (["UTF-8 bytes of the text, each byte one token id 0..255 (no tokenizer)"]
                 if accuracy_kind == "lm" else [f"integer token ids in [0, {vocab or 'vocab'})"])
        return {"input": space.onnx_names[0][0], "dtype": "int64", "shape": shape, "dataset": dataset,
                "steps": steps}
    info: dict[str, Any] = {"input": space.onnx_names[0][0], "dtype": "float32", "layout": "NCHW",
                            "shape": shape, "dataset": dataset}
    size = int(example.shape[-1])
    if dataset in EMBEDDED_GREY:
        resize = (f"bilinear resize to {size}x{size} (align_corners=False"
                  + (", antialias=True)" if dataset == "digits_distorted" else ")"))
        info.update(mean=[0.5] * 3, std=[0.5] * 3, steps=[
            EMBEDDED_GREY[dataset], resize, "x = (x - 0.5) / 0.5, so [0, 1] -> [-1, 1]",
            "the grey plane repeated in all 3 channels"])
    elif dataset is not None:
        info.update(mean=list(MEAN), std=list(STD), steps=[
            "convert to RGB", f"resize the shorter side to {int(size * 1.14)} (torchvision Resize, bilinear)",
            f"center crop {size}x{size}", "pixel values 0..255 divided by 255 -> [0, 1]",
            f"x = (x - mean) / std per channel, mean {list(MEAN)}, std {list(STD)}"])
    else:
        info["steps"] = [f"unknown: the accuracy source ({accuracy_kind or 'none'}) names no dataset"]
    return info


_SECRET_WORDS = ("token", "secret", "password", "credential")


def public_config(config: Any) -> Any:
    """``config`` with secret-looking values (a remote runner's ``token``) replaced: the
    recipe section goes into files meant to be shipped with the model."""
    if isinstance(config, Mapping):
        return {k: "<redacted>" if any(w in str(k).lower() for w in _SECRET_WORDS) else public_config(v)
                for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [public_config(v) for v in config]
    return config


def device_fingerprint(latency: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fingerprint of the run's latency device, where one is recorded without
    reaching the device: an onboarded ``device:`` source's ``device.json``."""
    from nas.devices import load_record

    name = (latency or {}).get("device")
    if not isinstance(name, str):
        return None
    try:
        return load_record(name).get("fingerprint")
    except ValueError:  # the device was removed since the search: say nothing rather than guess
        return None


def onnx_metadata(record: Mapping[str, Any], metrics: Mapping[str, Any], weights: str) -> dict[str, Any]:
    """``metadata_props`` of an exported ONNX (strings; JSON where structured)."""
    return {"arch": record["arch"], "space": record["space"], "space_options": record["space_options"],
            "input": record["preprocessing"]["input"], "input_shape": record["preprocessing"]["shape"],
            "input_dtype": record["preprocessing"]["dtype"], "preprocessing": record["preprocessing"],
            "dataset": record["preprocessing"].get("dataset"), "weights": weights,
            "accuracy": None if metrics.get("accuracy") is None else str(metrics["accuracy"]),
            "latency_ms": None if metrics.get("latency_ms") is None else str(metrics["latency_ms"]),
            "measured_latency_ms": (None if metrics.get("measured_latency_ms") is None
                                    else str(metrics["measured_latency_ms"])),
            "metrics": dict(metrics), "latency_source": record.get("latency_source"),
            "device_fingerprint": record.get("device_fingerprint"), "producer": "hwnas"}


def export_model(space: SearchSpace, model, arch: Any, folder: str | Path, metrics: Mapping[str, Any] | None = None,
                 weights: str = "random-init", dataset: str | None = None, accuracy_kind: str | None = None,
                 latency: Mapping[str, Any] | None = None, rank: int = 0,
                 calibration: list | None = None, int8_weights: str = "per_channel") -> Exported:
    """Write one export folder (see the module doc) for ``model``; ``metrics`` is the
    run's front row, ``latency`` the recipe's ``latency:`` section, ``calibration`` the
    input batches int8 layers are calibrated on (``None``: seeded synthetic inputs), with
    ``int8_weights`` scales."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics or {})
    record = {"arch": str(arch), "space": space.name, "space_options": space.options(),
              "decisions": space.encode(arch), "metrics": metrics, "features": space.features(arch),
              "weights": weights, "preprocessing": preprocessing(space, arch, dataset, accuracy_kind),
              "latency_source": public_config(latency) if latency else None,
              "device_fingerprint": device_fingerprint(latency)}
    atomic_write_text(folder / "arch.txt", str(arch) + "\n")
    atomic_write_text(folder / "arch.json", json.dumps(record, indent=2, default=str))
    save_model(space, model, arch, folder / "model.pt", weights)
    program_diff = export_program(space, model, arch, folder / "model.pt2")
    diff = export_verified_onnx(space, model.eval(), arch, folder / "model.onnx",
                                metadata=onnx_metadata(record, metrics, weights))
    if space.int8_modules(arch):
        record["int8"] = export_int8(space, model, arch, folder / "model.int8.onnx", calibration,
                                     onnx_metadata(record, metrics, weights), int8_weights)
        atomic_write_text(folder / "arch.json", json.dumps(record, indent=2, default=str))
    space.export_extras(model, arch, folder)
    write_model_card(folder)
    return Exported(rank, str(arch), folder, diff, weights, program_diff)


def export_int8(space: SearchSpace, model, arch: Any, path: Path, calibration: list | None,
                metadata: Mapping[str, Any], weights: str = "per_channel") -> dict[str, Any]:
    """Write the int8-quantized ONNX of ``arch`` to ``path``; return what ``arch.json`` says
    of it: the scheme, the quantized modules, the calibration, and its agreement with the
    float model on the calibration inputs (max abs logit difference, top-1 agreement)."""
    from hardware.quantize import export_quantized, int8_scheme, synthetic_calibration

    float_arch = space.float_arch(arch)
    inputs, outputs = space.onnx_names
    source = "accuracy source's training slice"
    if calibration is None:
        calibration = synthetic_calibration(space.example_input(float_arch, 8).numpy())
        source = "synthetic (the accuracy source has no data): scales may not suit real inputs"
    data = export_quantized(model, space.example_input(float_arch), calibration, space.int8_modules(arch),
                            weights, input_names=inputs, output_names=outputs, dynamic_batch=True)
    data = _with_metadata(data, {**metadata, "int8_scheme": int8_scheme(weights)})
    atomic_write_bytes(path, data)
    session = ort_session(data)
    name = session.get_inputs()[0].name
    diffs, agree, total = [], 0, 0
    with torch.no_grad():
        for batch in calibration:
            quantized = session.run(None, {name: batch})[0]
            reference = model.eval()(torch.from_numpy(batch)).numpy()
            diffs.append(float(np.abs(quantized - reference).max()))
            agree += int((quantized.argmax(1) == reference.argmax(1)).sum())
            total += len(batch)
    return {"file": path.name, "scheme": int8_scheme(weights), "modules": list(space.int8_modules(arch)),
            "calibration": source, "max_abs_diff": max(diffs), "top1_agreement": agree / max(total, 1)}


def save_model(space: SearchSpace, model, arch: Any, path: Path, weights: str) -> None:
    """The ``model.pt`` checkpoint: strings, lists and tensors only (``weights_only`` loads it)."""
    buffer = io.BytesIO()
    torch.save({"arch": str(arch), "space": space.name, "space_options": space.options(),
                "state_dict": model.state_dict(), "weights": weights}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def export_run(run_dir: str | Path, top: int, progress: bool = True) -> list[Exported]:
    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    front_path = run_dir / "front.json"
    for path in (recipe_path, front_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {str(run_dir)!r} a finished search run?")
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    recipe = load_recipe(recipe_path)
    space = make_space(recipe.space.name, **recipe.space.options)
    saved = json.loads(front_path.read_text())
    front = saved["front"][:top]
    if not front:
        nearest = "; ".join(f"{r['arch']} misses by {r['misses']}" for r in saved.get("nearest", [])[:3])
        raise ValueError(f"{run_dir}: nothing to export: no trial met the constraints "
                         f"{recipe.search.constraints}" + (f" (nearest: {nearest})" if nearest else ""))
    # the front re-measured on the device: its measured_* values go into the card and ONNX
    measured = {r["arch"]: {k: v for k, v in r.items() if k.startswith("measured_")}
                for r in saved.get("remeasured") or [] if isinstance(r, dict) and "arch" in r}
    # weights need no cached results: an in-memory store keeps export from writing any
    with MeasurementStore(":memory:") as store:
        ctx = RunContext(space, store, run_dir, recipe.seed, recipe.base_dir(), progress)
        accuracy = make_source(recipe.accuracy, ACCURACY_SOURCES, ctx, "accuracy", str(recipe_path))
        try:
            return [_export_one(space, accuracy, rank, {**row, **measured.get(row["arch"], {})},
                                run_dir / "export" / str(rank), recipe.latency)
                    for rank, row in enumerate(front, start=1)]
        finally:
            accuracy.close()


def accuracy_dataset(accuracy) -> str | None:
    """The dataset an accuracy source scores on (``train`` and ``supernet`` name one,
    ``lm`` its corpus); ``None`` for tables and predictors."""
    settings = getattr(accuracy, "settings", None)
    dataset = (getattr(accuracy, "dataset", None) or getattr(settings, "dataset", None)
               or getattr(settings, "corpus", None))
    return dataset if isinstance(dataset, str) else None


def _export_one(space: SearchSpace, accuracy, rank: int, row: dict[str, Any], folder: Path,
                latency: Mapping[str, Any] | None = None) -> Exported:
    arch = space.parse(row["arch"])
    model = accuracy.trained_model(arch)
    weights = accuracy.kind if model is not None else "random-init"
    if model is None:
        model = space.build(arch)
    kind = getattr(accuracy, "kind", None)
    calibration = accuracy.calibration_inputs(arch) if space.int8_modules(arch) else None
    return export_model(space, model.eval(), arch, folder, row, weights, accuracy_dataset(accuracy),
                        kind, latency, rank, calibration, accuracy.int8_weights() or "per_channel")


def finetune_bundle(space: SearchSpace, model, arch: Any, folder: str | Path, record: Mapping[str, Any]) -> float:
    """Beside ``finetuned.pt``: ``finetuned.pt2`` and ``finetuned.onnx`` (metadata with the
    fine-tuned accuracy), then the model card again; returns the ONNX max abs diff."""
    folder = Path(folder)
    meta = json.loads((folder / "arch.json").read_text()) if (folder / "arch.json").is_file() else {}
    dataset, kind = record.get("dataset"), None
    exported = {"arch": str(arch), "space": space.name, "space_options": space.options(),
                "preprocessing": preprocessing(space, arch, dataset, kind),
                "latency_source": meta.get("latency_source"), "device_fingerprint": meta.get("device_fingerprint")}
    weights = f"finetuned {record.get('epochs')} epochs"
    # latency does not change with the weights: the run's numbers still hold
    metrics = {**meta.get("metrics", {}), "accuracy": record.get("finetuned_accuracy")}
    export_program(space, model, arch, folder / "finetuned.pt2")
    diff = export_verified_onnx(space, model.eval(), arch, folder / "finetuned.onnx",
                                metadata=onnx_metadata(exported, metrics, weights))
    if meta:  # an export folder from before arch.json existed has nothing to build a card from
        write_model_card(folder)
    return diff


_CARD_FILES = (
    ("model.pt2", "`torch.export` program, dynamic batch (exported weights)"),
    ("model.onnx", "ONNX, dynamic batch, metadata_props (exported weights)"),
    ("model.int8.onnx", "the same with the arch's int8 layers quantized (QDQ; what the search measured)"),
    ("model.pt", "`{arch, space, space_options, state_dict, weights}` (`torch.load(..., weights_only=True)`)"),
    ("finetuned.pt2", "`torch.export` program after `hwnas finetune`"),
    ("finetuned.onnx", "ONNX after `hwnas finetune`"),
    ("finetuned.pt", "checkpoint after `hwnas finetune` (same format as model.pt)"),
    ("config.json", "hybrid SLM config: `search_spaces.slm.export.load_slm(folder)`"),
    ("arch.json", "decisions, metrics, features, preprocessing, latency source"),
)


def write_model_card(folder: str | Path) -> Path:
    """``README.md`` of an export folder, from its ``arch.json`` (and ``finetune.json``)."""
    folder = Path(folder)
    record = json.loads((folder / "arch.json").read_text())
    finetune = json.loads((folder / "finetune.json").read_text()) if (folder / "finetune.json").is_file() else None
    pre, metrics = record.get("preprocessing") or {}, record.get("metrics") or {}
    name, shape = pre.get("input", "input"), pre.get("shape", [])
    lines = [f"# {record['space']} model `{record['arch']}`", "",
             f"Exported by hwnas; weights: {record.get('weights')}.", "", "## Files", "",
             "| file | what |", "|---|---|"]
    lines += [f"| `{f}` | {what} |" for f, what in _CARD_FILES if (folder / f).is_file()]
    lines += ["", "## Input and preprocessing", "",
              f"`{name}`: {pre.get('dtype')} {pre.get('layout', '')} shape {shape} "
              f"(batch is dynamic; dataset: {pre.get('dataset') or 'unknown'}).", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(pre.get("steps", []), start=1)]
    if "mean" in pre:
        lines += ["", f"Normalisation: mean {pre['mean']}, std {pre['std']} (per RGB channel)."]
    lines += ["", "## Metrics (from the search)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics.items() if k not in ("arch", "trial", "feasible")]
    if finetune:
        lines += [f"| finetuned_accuracy ({finetune.get('epochs')} epochs on {finetune.get('dataset')}) "
                  f"| {finetune.get('finetuned_accuracy')} |"]
    lines += ["", f"Latency source (recipe `latency:`): `{json.dumps(record.get('latency_source'))}`",
              f"Device fingerprint: `{json.dumps(record.get('device_fingerprint'))}`"
              + ("" if record.get("device_fingerprint") else " (not recorded: the latency source is not an "
                 "onboarded device, see the source above)"), ""]
    example = ("x = torch.randint(0, 256, (4, %s))" % shape[-1] if pre.get("dtype") == "int64"
               else f"x = torch.randn(4, {', '.join(str(s) for s in shape[1:])})  # preprocessed as above")
    lines += ["## Loading without hwnas", "", "PyTorch (`torch.export`, no hwnas import needed):", "",
              "```python", "import torch", "", "model = torch.export.load('model.pt2').module()", example,
              "with torch.no_grad():", "    out = model(x)", "```", "", "ONNX Runtime:", "", "```python",
              "import numpy as np, onnxruntime as ort", "", "session = ort.InferenceSession('model.onnx')",
              "meta = session.get_modelmeta().custom_metadata_map  # arch, preprocessing, accuracy, latency_ms, ...",
              f"(out,) = session.run(None, {{'{name}': x.numpy()}})", "```", ""]
    if (folder / "finetuned.pt2").is_file():
        lines += ["The fine-tuned weights load the same way from `finetuned.pt2` / `finetuned.onnx`.", ""]
    if record["space"] == "mbv3":
        lines += ["timm alone (the mbv3 space builds timm's `MobileNetV3`, so this is the same network "
                  "and `model.pt`'s state_dict loads into it exactly):", "", "```python",
                  timm_rebuild_code(record["arch"], record["space_options"]), "```", ""]
    return atomic_write_text(folder / "README.md", "\n".join(lines))


def timm_rebuild_code(arch_text: str, space_options: Mapping[str, Any], checkpoint: str = "model.pt") -> str:
    """Python that rebuilds an ``mbv3`` export with timm alone: the constructor call
    :meth:`search_spaces.mbv3.MBV3Space.build` makes, with this arch's block strings
    (tests run it in a process where hwnas cannot be imported and compare outputs)."""
    space = make_space("mbv3", **space_options)
    arch = space.parse(arch_text)
    return "\n".join([
        "from functools import partial", "", "import torch", "import torch.nn as nn",
        "from timm.layers import get_act_layer",
        "from timm.models._efficientnet_blocks import SqueezeExcite",
        "from timm.models._efficientnet_builder import decode_arch_def, round_channels",
        "from timm.models.mobilenetv3 import MobileNetV3", "",
        f"ARCH_DEF = {space.arch_def(arch)!r}",
        "model = MobileNetV3(",
        "    block_args=decode_arch_def(ARCH_DEF),",
        f"    num_classes={space.num_classes}, stem_size=16, fix_stem={arch.width < 0.75}, num_features=1280,",
        f"    round_chs_fn=partial(round_channels, multiplier={arch.width!r}),",
        "    act_layer=get_act_layer('hard_swish'),",
        "    se_layer=partial(SqueezeExcite, gate_layer='hard_sigmoid', force_act_layer=nn.ReLU,",
        "                     rd_round_fn=round_channels),",
        ")",
        f"model.load_state_dict(torch.load({checkpoint!r}, weights_only=True)['state_dict'])",
        "model.eval()"])


def export_slm(model, arch: Any, out_dir: str | Path, prompt_len: int = 128, batch: int = 1,
               tolerance: float = 1e-3) -> dict[str, Any]:
    """A ``hybrid_slm`` model as checkpoint + JSON config + verified ONNX prefill graph
    (``prefill.onnx``, tokens int64 [batch, prompt_len] -> logits [batch, prompt_len, vocab]).

    Returns ``{"checkpoint", "config", "onnx": paths, "max_abs_diff": float}``;
    raises ``RuntimeError`` when ONNX Runtime disagrees with PyTorch by more
    than ``tolerance`` (a broken export must not look like a finished one)."""
    paths: dict[str, Any] = save_checkpoint(model, arch, out_dir)
    onnx_path = Path(out_dir) / "prefill.onnx"
    model = model.eval()
    tokens = torch.randint(0, model.config.vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    atomic_write_bytes(onnx_path, export_onnx(model, tokens, input_names=("tokens",), output_names=("logits",)))
    diff = verify_onnx(onnx_path, model, tokens)
    meta = json.loads(paths["config"].read_text())
    meta["onnx"] = {"file": onnx_path.name, "input": "tokens", "dtype": "int64",
                    "shape": [batch, prompt_len], "output": "logits", "max_abs_diff": diff}
    atomic_write_text(paths["config"], json.dumps(meta, indent=2) + "\n")
    if diff > tolerance:
        raise RuntimeError(f"ONNX export of {arch}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                           f"(> {tolerance:g})")
    return {**paths, "onnx": onnx_path, "max_abs_diff": diff}


def load_exported(folder: str | Path):
    """Rebuild an exported model (architecture + weights) from its ``model.pt``."""
    checkpoint = torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)
    space = make_space(checkpoint["space"], **checkpoint["space_options"])
    arch = space.parse(checkpoint["arch"])
    model = space.build(arch)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), arch, space
