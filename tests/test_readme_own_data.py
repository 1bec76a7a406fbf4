"""The README's own-data section runs as written (only the data root is replaced)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from own_data_fakes import make_readme_root

from glcnet.utils.config import PROJECT_ROOT, instantiate

#: The data root the README's commands are written for.
README_ROOT = "/data/mytiles"


def readme_block() -> str:
    """The first bash block of the README's "Your own data" section."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index("### Your own data") :]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)


def readme_commands() -> list[list[str]]:
    """The block's commands as argument lists (continuations joined, comments dropped)."""
    joined = readme_block().replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line, comments=True) for line in lines]


def test_readme_commands_compose_and_build_their_data(tmp_path):
    root = tmp_path / "mytiles"
    counts = make_readme_root(root)
    commands = readme_commands()
    assert [c[1] for c in commands] == [
        "scripts/inspect_data.py",
        "scripts/pretrain.py",
        "scripts/finetune.py",
        "scripts/evaluate.py",
    ]
    for command in commands:
        assert command[0] == "python"
        name = Path(command[1]).stem
        args = [a.replace(README_ROOT, str(root)) for a in command[2:]]
        args = [a for a in args if not a.startswith("hydra.")]
        if name == "evaluate":  # the checkpoint alone (its run record; run by the slow test)
            assert args == ["checkpoint=outputs/mytiles/finetune/checkpoints/best.ckpt"]
            continue
        cfg = compose_config(name, [*args, f"paths.output_dir={tmp_path / name}"])
        data = instantiate(cfg.data)
        if name == "pretrain":
            assert len(data.pretrain_dataset()) == 12
            continue
        for split in ("train", "val", "test"):
            ds = data.dataset(split)
            assert ds.num_classes == 4 and ds.class_names == tuple(f"class_{k}" for k in range(4))
            hist = sum(np.bincount(ds.read_labels(s).ravel(), minlength=4) for s in ds.scenes)
            np.testing.assert_array_equal(hist, counts[split])
        if "model" in cfg:
            assert cfg.model.num_classes == 4 and cfg.model.in_channels == 3


@pytest.mark.slow
def test_readme_own_data_section_runs_as_written(tmp_path):
    root = tmp_path / "mytiles"
    counts = make_readme_root(root)
    script = readme_block().replace(README_ROOT, str(root))
    work = tmp_path / "work"
    env = {
        **os.environ,
        "GLCNET_PROJECT_ROOT": str(work),  # run folders under work/outputs, not the checkout's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    (work / "scripts").mkdir(parents=True)
    for path in (PROJECT_ROOT / "scripts").glob("*.py"):  # commands name scripts/ relative paths
        (work / "scripts" / path.name).symlink_to(path)
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "0 warnings" in res.stdout
    assert (work / "outputs" / "mytiles" / "pretrain" / "pretrained.pt").is_file()
    (metrics_file,) = (work / "outputs" / "evaluate").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    support = [metrics["per_class"][n]["support"] for n in metrics["class_names"]]
    assert support == counts["test"].tolist()
