"""Self-supervised pretraining.

python scripts/pretrain.py data=sample method=glcnet trainer.max_epochs=1
python scripts/pretrain.py --help       # config groups and options
python scripts/pretrain.py --cfg job    # print the composed config and exit
python scripts/pretrain.py ckpt_path=last hydra.run.dir=outputs/pretrain/<run>  # continue a run
"""

import hydra
from _common import CONFIG_DIR, check_run_dir_argument, report_input_errors
from omegaconf import DictConfig

from glcnet.training.pretrain import run_pretrain
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = report_input_errors(lambda: run_pretrain(cfg))
    if result["is_global_zero"]:  # one summary, not one per process
        print(f"run folder: {result['output_dir']}\npretrained weights: {result['export']}")
        if result["skipped_tiles"]:
            print(
                f"skipped tiles: {result['skipped_tiles']} unreadable tile reads were replaced "
                f"(data.skip_bad_tiles=true; files in {result['output_dir']}/skipped_tiles.txt)"
            )


if __name__ == "__main__":
    check_run_dir_argument()
    main()
