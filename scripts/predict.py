"""Apply a fine-tuned model to new images: GeoTIFF class maps (COG), optional probabilities,
polygons (GeoPackage / GeoJSON) and a quicklook.

python scripts/predict.py checkpoint=outputs/finetune/<run>/checkpoints/best.ckpt \
    input=scene.tif output_dir=out
python scripts/predict.py checkpoint=<...> input=scenes/ output_dir=out vector=gpkg quicklook=true
python scripts/predict.py --help
"""

import hydra
from _common import CONFIG_DIR, report_input_errors
from omegaconf import DictConfig

from glcnet.prediction.run import run_predict
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = report_input_errors(lambda: run_predict(cfg))
    for scene in result["scenes"]:
        s = scene.stats
        twice = s.visits - s.windows
        again = f"; {twice} across column-block borders counted twice" if twice else ""
        print(f"{scene.image}: {s.run} of {s.visits} windows run ({s.skipped} without data{again})")
        for kind, path in scene.files.items():
            print(f"  {kind}: {path}")


if __name__ == "__main__":
    main()
