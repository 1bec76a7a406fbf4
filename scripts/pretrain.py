"""Self-supervised pretraining.

python scripts/pretrain.py data=sample method=glcnet trainer.max_epochs=1
python scripts/pretrain.py --help       # config groups and options
python scripts/pretrain.py --cfg job    # print the composed config and exit
"""

import hydra
from _common import CONFIG_DIR, report_input_errors
from omegaconf import DictConfig

from glcnet.training.pretrain import run_pretrain
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = report_input_errors(lambda: run_pretrain(cfg))
    if result["is_global_zero"]:  # one summary, not one per process
        print(f"run folder: {result['output_dir']}\npretrained weights: {result['export']}")


if __name__ == "__main__":
    main()
