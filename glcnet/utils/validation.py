"""Checks of a composed run configuration, before any data is read or model built.

:func:`validate_config` finds settings that cannot work together (a two-class loss on six classes,
bands that do not match the model's input channels, tile or view sizes the network cannot take,
label fractions that select nothing, a run without an end) and raises :class:`ConfigError` with
every problem found, in one line that names the settings and how to fix them. The entry scripts
print it and exit with status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

STAGES = ("pretrain", "finetune", "evaluate")
SPLITS = ("train", "val", "test", "all")


class ConfigError(ValueError):
    """Settings that cannot work (named in the message, with the fix)."""


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``cfg.<key>`` resolved, or ``default`` when absent."""
    try:
        value = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {str(cause).splitlines()[0]}") from None
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(problems: list[str], key: str, value: Any, minimum: int = 1) -> bool:
    if not _is_int(value) or value < minimum:
        problems.append(f"{key}={value} must be an integer >= {minimum}")
        return False
    return True


def _check_data(cfg: DictConfig, stage: str, problems: list[str]) -> None:
    """Batch sizes, classes, label subsets and bands of the ``data`` group."""
    _positive_int(problems, "data.batch_size", _get(cfg, "data.batch_size", 1))
    _positive_int(problems, "data.num_workers", _get(cfg, "data.num_workers", 0), minimum=0)
    tile = _get(cfg, "data.tile_size")
    _positive_int(problems, "data.tile_size", tile)
    stride = _get(cfg, "data.stride")
    if stride is not None:
        _positive_int(problems, "data.stride", stride)
    classes = _get(cfg, "data.num_classes")
    if _positive_int(problems, "data.num_classes", classes, minimum=2):
        names = _get(cfg, "data.class_names")
        if names is not None and len(names) != classes:
            problems.append(
                f"data.class_names has {len(names)} names for data.num_classes={classes}; give "
                f"one name per class"
            )
    fraction, count = _get(cfg, "data.label_fraction"), _get(cfg, "data.label_count")
    if fraction is not None and count is not None:
        problems.append(
            f"data.label_fraction={fraction} and data.label_count={count} are both set; set one "
            "of them (the other =null)"
        )
    if fraction is not None and not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        problems.append(f"data.label_fraction={fraction} must be in (0, 1]")
    if count is not None:
        _positive_int(problems, "data.label_count", count)
    _check_bands(cfg, problems)


def _check_bands(cfg: DictConfig, problems: list[str]) -> None:
    """Band settings valid for the data-set class, and as many as the model's input channels."""
    bands = _get(cfg, "data.bands")
    target = _get(cfg, "data.dataset_class")
    modes = None
    if target:
        try:
            import hydra

            modes = getattr(hydra.utils.get_class(target), "MODES", None)
        except Exception:  # noqa: BLE001 - an unknown class is reported when the data are built
            modes = None
    count = None
    if isinstance(bands, str):
        if modes is not None and bands.upper() not in modes:
            problems.append(f"data.bands={bands} is not a band mode of {target}: {list(modes)}")
            return
        from glcnet.utils.config import band_count

        try:
            count = band_count(bands)
        except ValueError as err:
            problems.append(f"data.bands={bands}: {err}")
            return
    elif isinstance(bands, list):
        if modes is not None:
            problems.append(f"data.bands={bands}: {target} takes a band mode name {list(modes)}")
            return
        if not bands or not all(_is_int(b) and b >= 1 for b in bands):
            problems.append(f"data.bands={bands} must be 1-based band indexes, e.g. [1,2,3]")
            return
        count = len(bands)
    channels = _get(cfg, "model.in_channels")
    if count is not None and _is_int(channels) and channels != count:
        problems.append(
            f"model.in_channels={channels} but data.bands={bands} reads {count} band(s); leave "
            "model.in_channels to follow data.bands or change one of them"
        )


def _check_model(cfg: DictConfig, problems: list[str]) -> int | None:
    """Output stride and class count of the model; returns the output stride."""
    stride = _get(cfg, "model.output_stride", 16)
    if stride not in (8, 16):
        problems.append(f"model.output_stride={stride} must be 8 or 16")
        return None
    classes, data_classes = _get(cfg, "model.num_classes"), _get(cfg, "data.num_classes")
    if _is_int(classes) and _is_int(data_classes) and classes != data_classes:
        problems.append(
            f"model.num_classes={classes} but data.num_classes={data_classes}; leave "
            "model.num_classes to follow data.num_classes"
        )
    return stride


def _divisible(problems: list[str], key: str, value: Any, stride: int | None) -> None:
    if stride and _is_int(value) and value % stride:
        problems.append(
            f"{key}={value} must be divisible by the model's output stride {stride} "
            f"(e.g. {max(stride, value // stride * stride)})"
        )


def _check_training(cfg: DictConfig, problems: list[str]) -> None:
    """End of the run, checkpoint interval, schedule, resume file."""
    steps, epochs = _get(cfg, "trainer.max_steps", -1), _get(cfg, "trainer.max_epochs")
    if (steps is None or steps == -1) and (epochs is None or epochs == -1):
        problems.append(
            "the run has no end: set trainer.max_steps=<N> or trainer.max_epochs=<N> (both are -1)"
        )
    if steps not in (None, -1):
        _positive_int(problems, "trainer.max_steps", steps)
    every = _get(cfg, "checkpoint_every_n_steps", 0)
    _positive_int(problems, "checkpoint_every_n_steps", every, minimum=0)
    scheduler = _get(cfg, "scheduler", "cosine")
    if scheduler not in ("cosine", "constant"):
        problems.append(f"scheduler={scheduler} must be cosine or constant")
    _positive_int(problems, "warmup_steps", _get(cfg, "warmup_steps", 0), minimum=0)
    ckpt = _get(cfg, "ckpt_path")
    if ckpt not in (None, "", "last") and not Path(str(ckpt)).is_file():
        problems.append(
            f"ckpt_path={ckpt}: no such file; give a checkpoint file, or ckpt_path=last with "
            "hydra.run.dir=<the run folder> to continue that run"
        )


def _check_pretrain(cfg: DictConfig, stride: int | None, problems: list[str]) -> None:
    size = _get(cfg, "augment.size")
    if _positive_int(problems, "augment.size", size):
        _divisible(problems, "augment.size", size, stride)
        region = _get(cfg, "augment.region_size")
        n_regions = _get(cfg, "augment.n_regions", 0)
        if n_regions and _is_int(region) and not 0 < region <= size:
            problems.append(f"augment.region_size={region} must be in [1, augment.size={size}]")
    if _get(cfg, "augment.small_crops", 0):
        _divisible(problems, "augment.small_size", _get(cfg, "augment.small_size"), stride)
    name = _get(cfg, "export_name", "pretrained.safetensors")
    if not str(name).endswith(".safetensors") or "/" in str(name):
        problems.append(
            f"export_name={name} must be a file name ending in .safetensors (the export format)"
        )
    _positive_int(problems, "diagnostics_every", _get(cfg, "diagnostics_every", 0), minimum=0)


def _check_finetune(cfg: DictConfig, stride: int | None, problems: list[str]) -> None:
    _divisible(problems, "data.tile_size", _get(cfg, "data.tile_size"), stride)
    classes = _get(cfg, "data.num_classes")
    _check_loss(cfg, classes, problems)
    transfer = _get(cfg, "transfer", "encoder")
    if transfer not in ("encoder", "encoder+decoder"):
        problems.append(f"transfer={transfer} must be encoder or encoder+decoder")
    for key in ("pretrained", "subset_file"):
        path = _get(cfg, key)
        if path and not Path(str(path)).is_file():
            problems.append(f"{key}={path}: no such file")
    per_epoch, batch = _get(cfg, "samples_per_epoch"), _get(cfg, "data.batch_size")
    if per_epoch and _is_int(batch) and (not _is_int(per_epoch) or per_epoch < batch):
        problems.append(
            f"samples_per_epoch={per_epoch} must be an integer >= data.batch_size={batch} "
            "(or null/0: one pass over the labeled tiles)"
        )
    _check_exclude(cfg, classes, problems)


def _check_loss(cfg: DictConfig, classes: Any, problems: list[str]) -> None:
    """The loss is defined for the number of classes, with one weight per class."""
    target = _get(cfg, "loss._target_")
    if not target or not _is_int(classes):
        return
    try:
        import hydra

        limit = getattr(hydra.utils.get_class(target), "max_classes", None)
    except Exception:  # noqa: BLE001 - reported when the loss is built
        limit = None
    short = target.rsplit(".", 1)[-1]
    if limit is not None and classes > limit:
        problems.append(
            f"loss {short} handles at most {limit} classes but data.num_classes={classes}; "
            "use loss=ce (or another multi-class loss) or two-class data"
        )
    weights = _get(cfg, "loss.class_weights")
    expected = limit if limit is not None and classes <= limit else classes
    if weights is not None and len(weights) != expected:
        problems.append(
            f"loss.class_weights has {len(weights)} entries for {expected} classes; give one "
            "weight per class"
        )


def _check_exclude(cfg: DictConfig, classes: Any, problems: list[str]) -> None:
    exclude = _get(cfg, "exclude_from_mean") or []
    if _is_int(classes):
        bad = [c for c in exclude if not _is_int(c) or not 0 <= c < classes]
        if bad:
            problems.append(
                f"exclude_from_mean={exclude}: {bad} are not class indices 0..{classes - 1}"
            )


def _check_evaluate(cfg: DictConfig, stride: int | None, problems: list[str]) -> None:
    try:
        checkpoint = OmegaConf.select(cfg, "checkpoint", throw_on_missing=True)
    except OmegaConfBaseException:
        checkpoint = None
    _require_checkpoint(checkpoint, problems)
    split = _get(cfg, "split", "test")
    if split not in SPLITS:
        problems.append(f"split={split} must be one of {list(SPLITS)}")
    overlap = _get(cfg, "overlap", 0.5)
    if not isinstance(overlap, int | float) or not 0 <= overlap < 1:
        problems.append(f"overlap={overlap} must be in [0, 1)")
    _positive_int(problems, "batch_size", _get(cfg, "batch_size", 1))
    _divisible(problems, "tile_size", _get(cfg, "tile_size"), stride)
    _check_exclude(cfg, _get(cfg, "data.num_classes"), problems)
    device = _get(cfg, "device", "auto")
    if not (device in ("auto", "cpu") or str(device).startswith("cuda")):
        problems.append(f"device={device} must be auto, cpu or cuda[:N]")


def _require_checkpoint(checkpoint: Any, problems: list[str]) -> None:
    if checkpoint in (None, ""):
        problems.append(
            "checkpoint=<fine-tuning checkpoint, e.g. <run>/checkpoints/best.ckpt> is required"
        )
    elif not Path(str(checkpoint)).is_file():
        problems.append(f"checkpoint={checkpoint}: no such file")


_STAGE_CHECKS: dict[str, Callable[[DictConfig, int | None, list[str]], None]] = {
    "pretrain": _check_pretrain,
    "finetune": _check_finetune,
    "evaluate": _check_evaluate,
}


def validate_config(cfg: DictConfig, stage: str) -> None:
    """Check a composed run config; cheap, reads no data and builds nothing.

    Args:
        cfg: The composed ``pretrain``, ``finetune`` or ``evaluate`` config.
        stage: Which of the three.

    Raises:
        ConfigError: Every problem found, in one line (``; ``-separated).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    problems: list[str] = []
    try:
        if stage != "evaluate":
            _check_data(cfg, stage, problems)
            _check_training(cfg, problems)
        stride = _check_model(cfg, problems)
        _STAGE_CHECKS[stage](cfg, stride, problems)
    except ConfigError as err:
        problems.append(str(err))
    if problems:
        raise ConfigError("; ".join(problems))


def checkpoint_arg(cfg: DictConfig) -> str:
    """The ``checkpoint=`` of an evaluation: given and an existing file.

    Raises:
        ConfigError: Missing or not a file.
    """
    problems: list[str] = []
    try:
        checkpoint = OmegaConf.select(cfg, "checkpoint", throw_on_missing=True)
    except OmegaConfBaseException:
        checkpoint = None
    _require_checkpoint(checkpoint, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return str(checkpoint)
