"""Supervised fine-tuning on a labeled fraction of the training tiles.

python scripts/finetune.py pretrained=outputs/pretrain/<run>/pretrained.safetensors data.label_fraction=0.01
python scripts/finetune.py --help
"""

import hydra
from _common import CONFIG_DIR, check_run_dir_argument, report_input_errors
from omegaconf import DictConfig

from glcnet.training.finetune import run_finetune
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = report_input_errors(lambda: run_finetune(cfg))
    if result["is_global_zero"]:  # one summary, not one per process
        print(f"run folder: {result['output_dir']}\nbest checkpoint: {result['best_checkpoint']}")
        if result["skipped_tiles"]:
            print(
                f"skipped tiles: {result['skipped_tiles']} unreadable tile reads were replaced "
                f"(data.skip_bad_tiles=true; files in {result['output_dir']}/skipped_tiles.txt)"
            )


if __name__ == "__main__":
    check_run_dir_argument()
    main()
