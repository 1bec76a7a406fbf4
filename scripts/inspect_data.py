"""Inspect a data set the way training and evaluation read it: run this first on your own data.

Per split: scenes, tiles, the class pixel histogram, the ignore and nodata shares, band value
ranges, means and standard deviations, and warnings on what looks wrong.

python scripts/inspect_data.py                                   # the sample data set
python scripts/inspect_data.py data=folder data.root=/data/mytiles data.num_classes=2 \
    'data.dataset_kwargs.palette=[0,255]'
"""

from pathlib import Path

import hydra
from _common import CONFIG_DIR, report_input_errors
from omegaconf import DictConfig

from glcnet.data.inspection import inspect_data
from glcnet.utils.config import instantiate, register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="inspect_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.paths.output_dir)
    report_input_errors(
        lambda: inspect_data(
            instantiate(cfg.data),
            list(cfg.splits),
            labeled=cfg.labeled,
            block=cfg.block_size,
            band_pixels=cfg.band_pixels,
            seed=cfg.seed,
            progress=cfg.progress,
            out=out,
        )
    )
    print(f"report: {out / 'inspection.json'}")


if __name__ == "__main__":
    main()
