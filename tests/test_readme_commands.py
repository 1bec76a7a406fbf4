"""Every ``python scripts/<name>.py`` command of the README composes with the config it names.

Commands that need real data (ISPRS archives, GPUs, a finished run) cannot all run here; this test
catches what goes stale when a key or a config group is renamed: each command's overrides are
composed, as Hydra would, onto ``configs/<name>.yaml`` (placeholders such as ``<time>`` filled in),
and the protocol's stage lists are checked the way ``scripts/protocol.py`` checks them. The sections
that can run on fixtures are run as written by ``test_readme_long_runs.py``,
``test_readme_own_data.py`` and ``test_predict_cli.py``.
"""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from glcnet.protocol import check_overrides
from glcnet.utils.config import PROJECT_ROOT, register_resolvers

CONFIG_OF = {
    "pretrain.py": "pretrain",
    "finetune.py": "finetune",
    "evaluate.py": "evaluate",
    "protocol.py": "protocol",
    "predict.py": "predict",
    "inspect_data.py": "inspect_data",
}
PLACEHOLDERS = {"<time>": "2026-01-01_00-00-00", "<...>": "weights.safetensors", "<dir>": "out"}


def readme_commands() -> list[str]:
    """``python scripts/...`` lines of the README's bash blocks (continuations joined, comments cut)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("srun ")
            if line.startswith("python scripts/"):
                found.append(line)
    return found


def hydra_commands() -> list[str]:
    return [c for c in readme_commands() if shlex.split(c)[1].rsplit("/", 1)[1] in CONFIG_OF]


def test_the_readme_shows_commands_of_every_script():
    scripts = {shlex.split(c, comments=True)[1].rsplit("/", 1)[1] for c in hydra_commands()}
    assert scripts == set(CONFIG_OF)
    assert len(hydra_commands()) >= 35


@pytest.mark.parametrize("line", hydra_commands())
def test_readme_command_composes(line):
    for key, value in PLACEHOLDERS.items():
        line = line.replace(key, value)
    line = line.replace("${SLURM_JOB_ID}", "4242")
    args = shlex.split(line, comments=True)
    script = args[1].rsplit("/", 1)[1]
    # hydra.* settings belong to the launcher, not to the composed job config
    overrides = [a for a in args[2:] if not a.startswith("hydra.")]
    register_resolvers()
    cfg = compose_config(CONFIG_OF[script], overrides)
    OmegaConf.to_container(cfg, resolve=False)  # every node is well formed
    if script == "protocol.py":
        p = cfg.protocol
        check_overrides("protocol.common_overrides", p.common_overrides, None)
        for stage in ("pretrain", "finetune", "evaluate"):
            check_overrides(f"protocol.{stage}_overrides", p[f"{stage}_overrides"], stage)
        for name, extra in p.finetune_variants.items():
            check_overrides(f"protocol.finetune_variants.{name}", list(extra), "finetune")
            compose_config("finetune", [*p.common_overrides, *p.finetune_overrides, *extra])
