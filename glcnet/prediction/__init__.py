"""Applying a trained model to new imagery: streamed sliding-window prediction and its outputs.

Modules, one job each:

- ``checkpoint``: checkpoint -> (model, :class:`PredictionSettings`), the one place that reads it;
- ``settings``: the data contract (bands, scaling, tile size, classes, palette);
- ``inputs``: which files ``input=`` names; ``input_fit``: does an image fit the model;
- ``validity``: which pixels hold data (nodata value, mask band, alpha band, override);
- ``streaming``: window-by-window prediction that hands out finished rows;
- ``geotiff``: row-by-row GeoTIFF/COG writing with colour table and class names;
- ``cog_check``: the Cloud-Optimized GeoTIFF layout check;
- ``vectorize``: class regions -> GeoPackage / GeoJSON polygons; ``quicklook``: the PNG preview;
- ``run``: :func:`run_predict` (scripts/predict.py) and :func:`predict_scene`.
"""

from glcnet.prediction.checkpoint import load_model_for_prediction
from glcnet.prediction.run import PredictOptions, predict_scene, run_predict
from glcnet.prediction.settings import PredictionSettings

__all__ = [
    "PredictOptions",
    "PredictionSettings",
    "load_model_for_prediction",
    "predict_scene",
    "run_predict",
]
