"""Applying a trained model to new imagery: streamed sliding-window prediction and its outputs.

Modules, one job each:

- ``checkpoint``: checkpoint -> (model, :class:`PredictionSettings`) from its run record, the one
  place that reads it;
- ``settings``: the data contract (bands, scaling, tile size, classes, palette);
- ``inputs``: which files ``input=`` names; ``input_fit``: does an image fit the model;
- ``streaming``: window-by-window prediction in column blocks that hands out finished pixels (which
  pixels hold data: the data sets' rules, :mod:`glcnet.data.nodata`);
- ``geotiff``: block-by-block GeoTIFF/COG writing with colour table and class names;
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
