"""The evaluation run behind scripts/evaluate.py: whole-scene prediction -> one confusion matrix."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import rasterio
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from glcnet.data.classes import BOUNDARY_COLOR, decode_palette
from glcnet.inference import sliding_window_predict, write_prediction_geotiff
from glcnet.metrics import ConfusionMatrix, format_metrics_table, segmentation_metrics
from glcnet.models.linear_probe import is_linear_probe_state, linear_probe_for_state
from glcnet.models.segmenter import Segmenter
from glcnet.training.export import CheckpointMismatchError
from glcnet.training.pretrain import output_dir_of
from glcnet.training.runtime import save_run_config
from glcnet.utils.config import instantiate

log = logging.getLogger(__name__)


def load_finetuned(model: Segmenter, path: str | Path) -> Segmenter:
    """Load the weights of a fine-tuning checkpoint (Lightning ``.ckpt``) into ``model``.

    Args:
        model: A network built from the same model config as the fine-tuning run.
        path: The checkpoint (e.g. ``<run>/checkpoints/best.ckpt``).

    Returns:
        The model, in eval mode; wrapped in a :class:`glcnet.models.linear_probe.LinearProbe` when
        the checkpoint holds one (``probe=linear`` runs).

    Raises:
        CheckpointMismatchError: The checkpoint's keys or shapes do not fit (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: not a fine-tuning checkpoint")
    theirs = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if is_linear_probe_state(theirs):
        model = linear_probe_for_state(model, theirs)
    own = model.state_dict()
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shape = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if missing or unexpected or shape:
        raise CheckpointMismatchError(
            f"{path}: weights do not fit the model (encoder={model.encoder_name}, "
            f"in_channels={model.in_channels}, classes={model.num_classes}); missing: {missing[:5]}, "
            f"unexpected: {unexpected[:5]}, shape mismatch: {shape[:5]}"
        )
    model.load_state_dict(theirs)
    return model.eval()


def read_scene_labels(
    dataset, scene: str, eroded: bool, unknown: str, ignore_index: int
) -> np.ndarray:
    """Read the full label image of one scene as class indices (H, W)."""
    path = dataset.label_path(scene, eroded=eroded)
    with rasterio.open(path) as src:
        if getattr(dataset, "palette", None) is None:
            return src.read(1).astype(np.int64)
        rgb = src.read([1, 2, 3])
    return decode_palette(
        rgb,
        dataset.palette,
        ignore_colors=[BOUNDARY_COLOR] if eroded else [],
        unknown=unknown,
        ignore_index=ignore_index,
        source=path,
    )


def run_evaluate(cfg: DictConfig) -> dict:
    """Predict every scene of a split and compute the metrics from one confusion matrix.

    Args:
        cfg: The composed ``evaluate`` config.

    Returns:
        ``output_dir``, ``metrics`` (the full metrics dict) and ``files`` written.
    """
    out = output_dir_of(cfg)
    save_run_config(cfg, out)
    data = instantiate(cfg.data)
    dataset = data.dataset(cfg.split, labeled=True, eroded=cfg.eroded)
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_finetuned(instantiate(cfg.model), cfg.checkpoint).to(device)
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
        labels = read_scene_labels(
            dataset, scene, cfg.eroded, data.unknown_colors, data.ignore_index
        )
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
