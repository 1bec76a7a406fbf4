"""Evaluate a fine-tuned model on whole scenes: mIoU, per-class IoU/F1, OA, Kappa.

python scripts/evaluate.py checkpoint=outputs/finetune/<run>/checkpoints/best.ckpt
python scripts/evaluate.py --help

The checkpoint's own data, bands, classes and model are used; data.* and model.* overrides given
here apply on top.
"""

import hydra
from _common import CONFIG_DIR, check_run_dir_argument, report_input_errors
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from glcnet.training.evaluate import run_evaluate
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    result = report_input_errors(lambda: run_evaluate(cfg, overrides=overrides))
    print(f"run folder: {result['output_dir']}\nmetrics: {result['files']['json']}")


if __name__ == "__main__":
    check_run_dir_argument()
    main()
