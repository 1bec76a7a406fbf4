"""The prediction run behind scripts/predict.py: a trained model applied to new images.

:func:`run_predict` reads the config, finds the inputs, loads the model once and calls
:func:`predict_scene` per image. :func:`predict_scene` takes plain arguments (a model, its
:class:`~glcnet.prediction.settings.PredictionSettings`, an image path, :class:`PredictOptions`),
so it also serves models that do not come from a checkpoint file.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import rasterio
import torch
from omegaconf import DictConfig, OmegaConf

from glcnet.data.errors import NodataError
from glcnet.data.nodata import NodataRule, alpha_bands_read, nodata_rule, parse_setting
from glcnet.data.raster import open_raster
from glcnet.inference import BLEND_MODES, resolve_stride
from glcnet.prediction.checkpoint import load_model_for_prediction
from glcnet.prediction.errors import PredictOptionError
from glcnet.prediction.geotiff import (
    BLOCK,
    class_raster,
    probability_raster,
    to_uint8_probabilities,
)
from glcnet.prediction.input_fit import fit_input
from glcnet.prediction.inputs import resolve_inputs
from glcnet.prediction.quicklook import write_quicklook
from glcnet.prediction.settings import DEFAULT_OUTPUT_NODATA, PredictionSettings
from glcnet.prediction.streaming import (
    DEFAULT_BLOCK_WIDTH,
    ScanStats,
    WindowReader,
    stream_predict,
)
from glcnet.prediction.vectorize import VECTOR_FORMATS, require_vector_libraries, vectorize_classes

log = logging.getLogger(__name__)

#: The predict setting of image nodata, named in messages (the rules: :mod:`glcnet.data.nodata`).
NODATA_SETTING = "image_nodata"


@dataclass(frozen=True)
class PredictOptions:
    """How to predict and what to write (the keys of configs/predict.yaml, documented there)."""

    overlap: float = 0.5
    tta_flip: bool = False
    blend: str = "gaussian"
    batch_size: int = 8
    image_nodata: str | float = "auto"
    scale: float | None = None
    output_nodata: int = DEFAULT_OUTPUT_NODATA
    cog: bool = True
    probabilities: bool = False
    vector: str | None = None
    simplify: float = 0.0
    min_area: float = 0.0
    connectivity: int = 4
    quicklook: bool = False
    quicklook_size: int = 1024
    progress: bool = True
    gdal_cache_mb: int = 64
    block_width: int | None = DEFAULT_BLOCK_WIDTH

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> PredictOptions:
        """The options among the keys of a predict config (other keys are ignored)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})

    def check(self, num_classes: int) -> None:
        """Refuse settings that cannot work, naming the value and the fix.

        Raises:
            PredictOptionError: The first problem found.
        """
        if not 0 <= self.overlap < 1:
            raise PredictOptionError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLEND_MODES:
            raise PredictOptionError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.batch_size < 1:
            raise PredictOptionError(f"batch_size must be >= 1, got {self.batch_size}")
        if not num_classes <= self.output_nodata <= 255:
            raise PredictOptionError(
                f"output_nodata={self.output_nodata} must be a uint8 value that is not a class "
                f"index (classes 0..{num_classes - 1}); use e.g. output_nodata=255"
            )
        if self.vector is not None and self.vector not in VECTOR_FORMATS:
            raise PredictOptionError(
                f"vector must be null or one of {sorted(VECTOR_FORMATS)}, got {self.vector!r}"
            )
        if self.simplify < 0 or self.min_area < 0:
            raise PredictOptionError(
                f"simplify and min_area must be >= 0, got {self.simplify}, {self.min_area}"
            )
        if self.connectivity not in (4, 8):
            raise PredictOptionError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if self.scale is not None and not self.scale > 0:
            raise PredictOptionError(f"scale must be > 0 or null, got {self.scale}")
        if self.quicklook_size < 1 or self.gdal_cache_mb < 1:
            raise PredictOptionError("quicklook_size and gdal_cache_mb must be >= 1")
        if self.block_width is not None and (self.block_width < 1 or self.block_width % BLOCK):
            raise PredictOptionError(
                f"block_width must be a positive multiple of {BLOCK} (the output's tile side) or "
                f"null, got {self.block_width}"
            )
        try:
            parse_setting(self.image_nodata, NODATA_SETTING)
        except NodataError as err:
            raise PredictOptionError(str(err)) from None

    def output_names(self, stem: str) -> dict[str, str]:
        """File names of what is written for an input of this stem."""
        names = {"classes": f"{stem}.tif"}
        if self.probabilities:
            names["probabilities"] = f"{stem}_prob.tif"
        if self.vector:
            names["vector"] = stem + VECTOR_FORMATS[self.vector][1]
        if self.quicklook:
            names["quicklook"] = f"{stem}_quicklook.png"
        return names


@dataclass
class SceneResult:
    """What :func:`predict_scene` did for one image.

    Attributes:
        image: The input image.
        files: Output kind (``classes``, ``probabilities``, ``vector``, ``quicklook``) -> path.
        stats: Windows run and skipped.
        validity: How no-data pixels were found (the image's nodata rule, in words).
        polygons: Polygons written (vector output only).
    """

    image: Path
    files: dict[str, Path] = field(default_factory=dict)
    stats: ScanStats = field(default_factory=ScanStats)
    validity: str = ""
    polygons: int | None = None


def predict_scene(
    model: torch.nn.Module | Any,
    settings: PredictionSettings,
    image: str | Path,
    output_dir: str | Path,
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
) -> SceneResult:
    """Predict one image window by window and write its outputs into ``output_dir``.

    Args:
        model: Maps (B, C, T, T) to logits (B, K, T, T) (see :func:`stream_predict`).
        settings: The model's data contract (bands, scaling, tile size, classes).
        image: The input image.
        output_dir: Folder of the outputs (created).
        options: What to write and how; None: the defaults.
        device: Where the model runs.

    Returns:
        The files written and what the scan did.
    """
    options = options or PredictOptions()
    options.check(settings.num_classes)
    image = Path(image)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {k: out_dir / v for k, v in options.output_names(image.stem).items()}
    result = SceneResult(image)
    stride = resolve_stride(settings.tile_size, options.overlap, None)
    tags = {
        "SOURCE_IMAGE": str(image),
        "CHECKPOINT": settings.source,
        "TILE_SIZE": str(settings.tile_size),
        "OVERLAP": str(options.overlap),
        "TTA_FLIP": str(options.tta_flip),
    }
    if settings.mask_spec is not None:  # how the training masks stored each class
        tags["MASK_SPEC"] = json.dumps(settings.mask_spec)
    with rasterio.Env(GDAL_CACHEMAX=options.gdal_cache_mb * 2**20), ExitStack() as stack:
        ds = stack.enter_context(open_raster(str(image)))
        fit = fit_input(ds, settings, options.scale)
        setting = parse_setting(options.image_nodata, NODATA_SETTING)
        rule = nodata_rule(ds, fit.band_indexes, setting, NODATA_SETTING)
        result.validity = describe_nodata(ds, fit.band_indexes, rule)
        log.info("%s: no data from %s", image.name, result.validity)
        reader = WindowReader(ds, fit.band_indexes, fit.divisors, rule, NODATA_SETTING)
        classes = stack.enter_context(
            class_raster(
                names["classes"],
                ds,
                settings.class_names,
                settings.palette,
                options.output_nodata,
                cog=options.cog,
                tags=tags,
            )
        )
        probs = None
        if options.probabilities:
            probs = stack.enter_context(
                probability_raster(
                    names["probabilities"], ds, settings.class_names, cog=options.cog, tags=tags
                )
            )
        blocks = stream_predict(
            model,
            reader,
            settings.num_classes,
            settings.tile_size,
            stride,
            batch_size=options.batch_size,
            tta_flip=options.tta_flip,
            blend=options.blend,
            device=device,
            progress=image.name if options.progress else None,
            stats=result.stats,
            block_width=options.block_width,
        )
        for block in blocks:
            classes.write(block.row, block.col, block.class_indices(options.output_nodata)[None])
            if probs is not None:
                probs.write(
                    block.row,
                    block.col,
                    to_uint8_probabilities(block.probabilities.numpy()),
                    block.valid,
                )
        result.files["classes"] = classes.close()
        if probs is not None:
            result.files["probabilities"] = probs.close()
    if options.vector:
        summary = vectorize_classes(
            result.files["classes"],
            names["vector"],
            settings.class_names,
            options.output_nodata,
            fmt=options.vector,
            simplify=options.simplify,
            min_area=options.min_area,
            connectivity=options.connectivity,
        )
        result.files["vector"], result.polygons = summary.path, summary.polygons
    if options.quicklook:
        result.files["quicklook"] = write_quicklook(
            image,
            fit.band_indexes,
            result.files["classes"],
            settings.palette,
            options.output_nodata,
            names["quicklook"],
            max_size=options.quicklook_size,
        )
    return result


def describe_nodata(
    ds: rasterio.io.DatasetReader, bands: tuple[int, ...], rule: NodataRule | None
) -> str:
    """How an input's no-data pixels are found, in words (for the log and :class:`SceneResult`)."""
    text = rule.describe() if rule is not None else "no nodata value or mask: every pixel is data"
    read_alpha = alpha_bands_read(ds, bands)
    if read_alpha:
        text += f"; band(s) {read_alpha} tagged alpha are read as data, not used as a mask"
    if any(ds.dtypes[b - 1].startswith("float") for b in bands):
        text += "; non-finite values are no data"
    return text


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _check_outputs(images: list[Path], out_dir: Path, options: PredictOptions, overwrite: bool):
    """Refuse outputs that would replace an input, or existing files unless ``overwrite``."""
    inputs = {p.resolve() for p in images}
    for image in images:
        for name in options.output_names(image.stem).values():
            target = (out_dir / name).resolve()
            if target in inputs:
                raise PredictOptionError(
                    f"output {target} would replace the input image of that name; choose another "
                    f"output_dir"
                )
            if target.exists() and not overwrite:
                raise PredictOptionError(
                    f"output {target} exists; set overwrite=true to replace it or choose another "
                    f"output_dir"
                )


def run_predict(cfg: DictConfig) -> dict:
    """Apply a trained model to every image named by ``cfg.input``.

    Everything is checked before the first scene is predicted: the inputs exist, the options make
    sense, the vector libraries are installed when asked for, every image fits the model.

    Args:
        cfg: The composed ``predict`` config.

    Returns:
        ``output_dir`` and ``scenes`` (one :class:`SceneResult` per input image).
    """
    images = resolve_inputs(cfg.input)
    options = PredictOptions.from_config(cfg)
    options.check(num_classes=1)  # bad values are named before anything is loaded
    if options.vector:
        require_vector_libraries(f"vector={options.vector}")
    out_dir = Path(cfg.output_dir).expanduser()
    _check_outputs(images, out_dir, options, bool(cfg.overwrite))
    model, settings = load_model_for_prediction(cfg.checkpoint)
    bands = OmegaConf.to_container(cfg.bands) if OmegaConf.is_list(cfg.bands) else cfg.bands
    try:
        settings = settings.with_overrides(bands=bands, tile_size=cfg.tile_size)
    except ValueError as err:
        raise PredictOptionError(str(err)) from err
    options.check(settings.num_classes)
    trained = settings.image_nodata
    if options.image_nodata == "auto" and not isinstance(trained, str | None):
        log.warning(
            "the model was trained with image_nodata=%s (pixels where every band equals it were "
            "no data); this prediction uses each input's own nodata value or mask "
            "(image_nodata=auto): set image_nodata=%s to treat those pixels as no data here",
            trained,
            trained,
        )
    stride_of_model = getattr(model, "output_stride", 1)
    if settings.tile_size % stride_of_model:
        raise PredictOptionError(
            f"tile_size={settings.tile_size} must be a multiple of the model's output stride "
            f"{stride_of_model}"
        )
    for image in images:  # every image fits before the first one is predicted
        with open_raster(str(image)) as ds:
            fit_input(ds, settings, options.scale)
    device = _device(str(cfg.device))
    model = model.to(device)
    results = []
    for image in images:
        result = predict_scene(model, settings, image, out_dir, options, device=device)
        s = result.stats
        log.info(
            "%s: %d windows in %d column block(s), %d computed again at block borders; %d run, "
            "%d skipped (no data) -> %s",
            image.name,
            s.windows,
            s.column_blocks,
            s.visits - s.windows,
            s.run,
            s.skipped,
            ", ".join(str(p) for p in result.files.values()),
        )
        results.append(result)
    return {"output_dir": out_dir, "scenes": results, "settings": asdict(settings)}


__all__ = ["PredictOptions", "SceneResult", "predict_scene", "run_predict"]
