"""The commands of the README's "Long runs and clusters" and "Evaluation" sections run as written.

Each command is taken from the README; only its data and sizes are shrunk to the tiny sample set
(overrides appended, ``data.root`` pointed at the fixture) and ``outputs/`` moved into ``tmp_path``.
"""

from __future__ import annotations

import re
import shlex

import numpy as np
from cli import run_commands

from glcnet.training.run_record import read_run_record
from glcnet.utils.config import PROJECT_ROOT

TINY = [
    "trainer=cpu",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "data.sample_seed=null",
    "data.tile_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "model.encoder=resnet18",
    "model.decoder_channels=32",
]
STAGE = {
    "pretrain.py": ["augment.size=64", "augment.region_size=16", "diagnostics_every=0"],
    "finetune.py": ["samples_per_epoch=8"],
}


def section(title: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index(title)
    level = title.split(" ")[0]
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(title) :], re.M)
    return text[start : start + len(title) + (following.start() if following else len(text))]


def commands(text: str) -> list[str]:
    """``python ...`` command lines of the bash blocks (continuations joined, comments dropped)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("srun "):
                line = line[len("srun ") :]
            if line.startswith("python "):
                found.append(line)
    return found


def test_readme_long_run_commands_run_as_written(tiny_sample_root, tmp_path):
    lines = commands(section("## Long runs and clusters")) + commands(section("### Evaluation"))
    assert len(lines) == 9, lines
    script_runs, python_c = [], []
    for i, line in enumerate(lines):
        line = line.replace("${SLURM_JOB_ID}", "4242").replace("outputs/", f"{tmp_path}/outputs/")
        args = shlex.split(line)[1:]
        if args[0] == "-c":
            python_c.append(args[1])
            continue
        script = args[0].rsplit("/", 1)[1]
        args = [re.sub(r"^data.root=.*", f"data.root={tiny_sample_root}", a) for a in args[1:]]
        if script != "evaluate.py":
            args += [*TINY, *STAGE[script]]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.append(f"hydra.run.dir={tmp_path}/run{i}")
        script_runs.append((script, args))
    results = run_commands(script_runs, cwd=tmp_path)
    for (script, args), res in zip(script_runs, results):
        assert res["code"] == 0, (script, args, res["stderr"][-3000:])
    out = tmp_path / "outputs"
    assert (out / "pretrain" / "potsdam_r50" / "pretrained.safetensors").exists()
    assert (out / "pretrain" / "slurm_4242" / "checkpoints" / "last.ckpt").exists()
    best = out / "finetune" / "potsdam_1pct" / "checkpoints" / "best.ckpt"
    assert read_run_record(best)["data"]["root"] == str(tiny_sample_root)
    # the evaluation with tta and eroded labels wrote predictions; the one on val scored 3 scenes
    assert len(list((tmp_path / "run7" / "predictions").glob("*.tif"))) == 14
    assert np.load(tmp_path / "run8" / "confusion.npy").sum() == 3 * 128 * 128
    assert len(python_c) == 1
    code = python_c[0]
    assert "read_run_record" in code
    exec(code, {})  # noqa: S102 - the README's one-liner, on the run above
