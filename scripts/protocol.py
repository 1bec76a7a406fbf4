"""The few-label protocol (what `make demo` runs).

python scripts/protocol.py experiment=demo
python scripts/protocol.py experiment=protocol_cpu
python scripts/protocol.py experiment=demo 'protocol.seeds=[0,1]' 'protocol.evals=[finetune,frozen,linear]'
python scripts/protocol.py protocol.label_fractions=[0.01,0.1] protocol.methods=[glcnet,glcnet_local_only]
"""

from pathlib import Path

import hydra
from _common import CONFIG_DIR, check_run_dir_argument, report_input_errors
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from glcnet.protocol import run_protocol
from glcnet.utils.config import register_resolvers

register_resolvers()


@hydra.main(config_path=CONFIG_DIR, config_name="protocol", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = HydraConfig.get().runtime.output_dir
    args = OmegaConf.to_container(cfg.protocol, resolve=True)
    report_input_errors(lambda: run_protocol(config_dir=CONFIG_DIR, output_dir=out, **args))
    print("\nFew-label protocol (test split, whole scenes):\n")
    print((Path(out) / "results.md").read_text())
    print(f"results (per seed: results.csv/json; summary.json), plot and every run: {out}")


if __name__ == "__main__":
    check_run_dir_argument()
    main()
