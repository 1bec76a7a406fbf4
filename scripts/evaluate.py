"""Evaluate a fine-tuned model on whole scenes: mIoU, per-class IoU/F1, OA, Kappa.

python scripts/evaluate.py checkpoint=outputs/finetune/<run>/checkpoints/best.ckpt
python scripts/evaluate.py --help
"""

import hydra
from _common import CONFIG_DIR, report_input_errors
from omegaconf import DictConfig

from glcnet.training.evaluate import run_evaluate
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = report_input_errors(lambda: run_evaluate(cfg))
    print(f"run folder: {result['output_dir']}\nmetrics: {result['files']['json']}")


if __name__ == "__main__":
    main()
