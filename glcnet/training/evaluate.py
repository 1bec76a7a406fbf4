"""The evaluation run behind scripts/evaluate.py: whole-scene prediction -> one confusion matrix."""

from __future__ import annotations

import copy
import csv
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from glcnet.inference import sliding_window_predict, write_prediction_geotiff
from glcnet.metrics import ConfusionMatrix, format_metrics_table, segmentation_metrics
from glcnet.models.linear_probe import is_linear_probe_state, linear_probe_for_state
from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import load_torch_file
from glcnet.training.export import CheckpointMismatchError, check_state_fits
from glcnet.training.output_folder import output_dir_of
from glcnet.training.run_record import read_run_record, record_mismatches
from glcnet.training.runtime import save_run_config
from glcnet.utils.config import instantiate
from glcnet.utils.validation import checkpoint_arg, validate_config

log = logging.getLogger(__name__)


def load_finetuned(model: Segmenter, path: str | Path) -> Segmenter:
    """Load the weights of a fine-tuning checkpoint (Lightning ``.ckpt``) into ``model``, safely.

    Args:
        model: A network built from the same model config as the fine-tuning run.
        path: The checkpoint (e.g. ``<run>/checkpoints/best.ckpt``).

    Returns:
        The model, in eval mode; wrapped in a :class:`glcnet.models.linear_probe.LinearProbe` when
        the checkpoint holds one (``probe=linear`` runs).

    Raises:
        CheckpointReadError: Missing, unreadable or unsafe file (nothing of it is executed).
        CheckpointMismatchError: The checkpoint's keys or shapes do not fit (named in the message).
    """
    blob = load_torch_file(path, "fine-tuning checkpoint")
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: not a fine-tuning checkpoint")
    theirs = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    backbone = model
    if is_linear_probe_state(theirs):
        model = linear_probe_for_state(model, theirs)
    check_state_fits(model.state_dict(), theirs, path, "weights", backbone)
    model.load_state_dict(theirs)
    return model.eval()


def user_overrides(cfg: DictConfig, overrides: Sequence[str] | None = None) -> list[str]:
    """The command-line overrides of an evaluation, wherever they can be found.

    Args:
        cfg: The composed config (holds ``hydra.overrides.task`` when composed with
            ``return_hydra_config=True``).
        overrides: Given explicitly (the entry script passes Hydra's task overrides; compose-API
            callers pass theirs).

    Returns:
        The overrides; empty when none are known.
    """
    if overrides is not None:
        return list(overrides)
    task = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
    return list(task) if task is not None else []


def _set_path(tree: dict, dotted: str, value: Any, delete: bool = False) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    if delete:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def _merge_section(
    cfg: DictConfig, section: str, recorded: dict, overrides: Sequence[str]
) -> tuple[DictConfig, list[str]]:
    """The run's recorded ``data``/``model`` config with the command line's overrides on top.

    A group choice (``data=folder``) or an ``experiment=`` takes the composed section as it is.

    Returns:
        The section and the overridden keys.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    if any(o.key_or_group in (section, "experiment") for o in parsed):
        return cfg[section], [section]
    merged = copy.deepcopy(recorded)
    changed = []
    for o in parsed:
        key = o.key_or_group
        if not key.startswith(f"{section}."):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        _set_path(merged, key[len(section) + 1 :], value, delete=o.is_delete())
        changed.append(key)
    merged["_target_"] = cfg[section]["_target_"]  # never a class named by the file
    return OmegaConf.create(merged), changed


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def evaluation_config(
    cfg: DictConfig, overrides: Sequence[str] | None = None
) -> tuple[DictConfig, dict | None]:
    """Compose what to evaluate: the checkpoint's own data and model, plus the user's overrides.

    Args:
        cfg: The composed ``evaluate`` config.
        overrides: The user's overrides (see :func:`user_overrides`).

    Returns:
        The config to run (``data`` and ``model`` from the checkpoint's run record, with every
        ``data.*``/``model.*`` override applied on top) and the record (None for checkpoints
        written before records existed: then the composed config is used, with a warning).

    Raises:
        CheckpointMismatchError: The checkpoint is not a fine-tuning checkpoint, or names a data
            set class outside glcnet that the command line does not confirm.
    """
    path = checkpoint_arg(cfg)
    record = read_run_record(path, required=False)
    if record is None:
        warnings.warn(
            f"{path} carries no run record (an older checkpoint): evaluating the data and model "
            "of the command line and config defaults",
            stacklevel=2,
        )
        return cfg, None
    if record.get("stage") != "finetune":
        raise CheckpointMismatchError(
            f"{path} is a {record.get('stage')} checkpoint; evaluate.py takes a fine-tuning "
            "checkpoint (<finetune run>/checkpoints/best.ckpt)"
        )
    recorded = record.get("config") or {}
    recorded_data = dict(recorded.get("data") or {})
    given = user_overrides(cfg, overrides)
    data, data_keys = _merge_section(cfg, "data", recorded_data, given)
    model, model_keys = _merge_section(cfg, "model", dict(recorded.get("model") or {}), given)
    dataset_class = str(data.get("dataset_class", ""))
    if not dataset_class.startswith("glcnet.") and not {"data", "data.dataset_class"} & set(
        data_keys
    ):
        raise CheckpointMismatchError(
            f"{path} names data.dataset_class={dataset_class}, outside glcnet; classes named by "
            f"a file are not imported unless you confirm: data.dataset_class={dataset_class}"
        )
    trained = {
        "bands": recorded_data.get("bands"),
        "num_classes": recorded_data.get("num_classes"),
        "class_names": (record.get("data") or {}).get("class_names"),  # the effective names
    }
    asked = {key: _plain(data.get(key)) for key in trained}
    problems = [
        f"it was trained with data.{key}={trained[key]}, data.{key}={asked[key]} asked for"
        for key in trained
        if asked[key] is not None and trained[key] is not None and asked[key] != trained[key]
    ]
    if problems:
        raise CheckpointMismatchError(
            f"{path} does not fit the data asked for: {'; '.join(problems)}"
        )
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.data = data
        out.model = model
    changed = data_keys + model_keys
    log.info(
        "evaluating %s with its run's data and model%s",
        path,
        f" (overridden: {', '.join(changed)})" if changed else "",
    )
    return out, record


def run_evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict:
    """Predict every scene of a split and compute the metrics from one confusion matrix.

    ``checkpoint=X`` alone evaluates X's own data, bands, classes and model (its run record);
    ``data.*`` and ``model.*`` overrides apply on top, and a checkpoint that does not fit the data
    asked for is refused in one line.

    Args:
        cfg: The composed ``evaluate`` config.
        overrides: The user's command-line overrides (the script passes Hydra's; None: read
            ``hydra.overrides.task`` from ``cfg`` when present, else none).

    Returns:
        ``output_dir``, ``metrics`` (the full metrics dict) and ``files`` written.
    """
    checkpoint_arg(cfg)
    cfg, record = evaluation_config(cfg, overrides)
    validate_config(cfg, "evaluate")
    out = output_dir_of(cfg, checkpoints=False)
    save_run_config(cfg, out)
    data = instantiate(cfg.data)
    dataset = data.dataset(cfg.split, labeled=True, eroded=cfg.eroded)
    if record is not None:
        problems = record_mismatches(record, data, dataset)
        if problems:
            raise CheckpointMismatchError(
                f"{cfg.checkpoint} does not fit the data asked for: {'; '.join(problems)}"
            )
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = instantiate(cfg.model, encoder_weights=None)  # the weights come from the checkpoint
    model = load_finetuned(model, cfg.checkpoint).to(device)
    confusion = ConfusionMatrix(data.num_classes, ignore_index=data.ignore_index)
    pred_dir = out / "predictions"
    scenes = list(dataset.scenes)
    for scene in tqdm(scenes, desc=f"evaluating {cfg.split}", unit="scene"):
        probs = sliding_window_predict(
            model,
            dataset.image_path(scene),
            num_classes=data.num_classes,
            tile_size=cfg.tile_size,
            overlap=cfg.overlap,
            batch_size=cfg.batch_size,
            tta_flip=cfg.tta_flip,
            band_indexes=dataset.band_indexes,
            device=device,
        )
        pred = probs.argmax(0)
        labels = dataset.read_labels(scene, eroded=cfg.eroded)  # the training tiles' reader
        confusion.update(pred, torch.from_numpy(labels))
        if cfg.write_predictions:
            pred_dir.mkdir(parents=True, exist_ok=True)
            write_prediction_geotiff(
                pred.numpy().astype(np.uint8),
                dataset.image_path(scene),
                str(pred_dir / f"{scene}_prediction.tif"),
                palette=dataset.palette if getattr(dataset, "palette", None) else None,
            )
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    metrics = segmentation_metrics(
        confusion.matrix, names, exclude_from_mean=list(cfg.exclude_from_mean)
    )
    table = format_metrics_table(metrics)
    print(table)
    files = {"json": out / "metrics.json", "csv": out / "metrics.csv", "table": out / "metrics.txt"}
    files["table"].write_text(table + "\n")
    files["json"].write_text(json.dumps(_jsonable(metrics), indent=1))
    _write_csv(files["csv"], metrics, names)
    np.save(out / "confusion.npy", confusion.matrix.cpu().numpy())
    return {"output_dir": out, "metrics": metrics, "files": files}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and np.isnan(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _write_csv(path: Path, metrics: dict, names: list[str]) -> None:
    per_class = metrics.get("per_class", {})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "IoU", "precision", "recall", "F1"])
        for name in names:
            row = per_class.get(name, {})
            w.writerow([name, *(row.get(k) for k in ("IoU", "precision", "recall", "F1"))])
        for key in ("mIoU", "mF1", "OA", "Kappa"):
            w.writerow([key, metrics.get(key)])
