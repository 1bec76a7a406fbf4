"""The few-label protocol end to end on the tiny sample set: seeds, evals, statistics, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_overrides
from scipy.stats import t as student_t

from glcnet.protocol import ProtocolConfigError, ProtocolResumeError, run_protocol
from glcnet.protocol_results import summarize_rows
from glcnet.training.export import read_pretrained
from glcnet.training.provenance import state_fingerprint
from glcnet.utils.config import CONFIG_DIR, PROJECT_ROOT

TRAIN = ["trainer=cpu", "trainer.enable_progress_bar=false"]


def _tiny_protocol_args(root) -> dict:
    """run_protocol arguments that shrink every stage to seconds (GLCNet and random init)."""
    data = [o for o in tiny_overrides(root, root, train=False) if not o.startswith("paths.")]
    return {
        "config_dir": str(CONFIG_DIR),
        "methods": ["glcnet"],
        "label_fractions": [0.05],
        "common_overrides": data,
        "pretrain_overrides": [*TRAIN, "augment.size=64", "augment.region_size=16"],
        "pretrain_steps": 2,
        "finetune_overrides": [*TRAIN, "trainer.max_steps=2", "samples_per_epoch=8"],
        "evaluate_overrides": ["overlap=0", "split=val"],  # 3 scenes: fast
        "eval_overrides": {"linear": ["optimizer.lr=1e-2"]},
    }


def _data_identity(run_dir) -> dict:
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    return {k: data[k] for k in ("root", "tile_size", "bands", "eroded", "num_classes", "stride")}


def _spy(monkeypatch) -> dict:
    """Record the pretraining and fine-tuning runs the protocol starts."""
    import glcnet.protocol as protocol

    calls = {"pretrain": [], "finetune": []}
    real_pretrain, real_finetune = protocol.run_pretrain, protocol.run_finetune

    def spy_pretrain(cfg):
        calls["pretrain"].append((cfg.ckpt_path, cfg.trainer.max_steps, cfg.trainer.max_epochs))
        return real_pretrain(cfg)

    def spy_finetune(cfg):
        calls["finetune"].append(cfg.paths.output_dir.rsplit("/", 1)[1])
        return real_finetune(cfg)

    monkeypatch.setattr(protocol, "run_pretrain", spy_pretrain)
    monkeypatch.setattr(protocol, "run_finetune", spy_finetune)
    return calls


def _check_rows(tmp_path, rows: list[dict]) -> None:
    """Numbers, not files: each row is its evaluation, started from the right weights, on the
    data of its pretraining, with one label subset per seed shared by every init."""
    export = tmp_path / "pretrain_glcnet" / "pretrained.safetensors"
    exported = state_fingerprint(read_pretrained(export)[0]["encoder"])
    subsets: dict[int, set] = {}
    for r in rows:
        run = tmp_path / r["run"]
        ev_dir = tmp_path / r["run"].replace("finetune_", "evaluate_", 1)
        metrics = json.loads((ev_dir / "metrics.json").read_text())
        for k in ("mIoU", "mF1", "OA", "Kappa"):
            assert r[k] == metrics[k]
        init = json.loads((run / "init.json").read_text())
        if r["init"] == "glcnet":
            assert r["pretrained"] == str(export) and init["pretrained"] == str(export)
            assert init["encoder_sha256"] == exported
        else:
            assert r["pretrained"] is None and init["pretrained"] is None
            assert init["loaded"] == [] and init["encoder_sha256"] != exported
        probe = yaml.safe_load((run / "config.yaml").read_text())["probe"]
        assert probe == {"finetune": "none", "frozen": "frozen", "linear": "linear"}[r["eval"]]
        assert (
            _data_identity(run)
            == _data_identity(ev_dir)
            == _data_identity(tmp_path / "pretrain_glcnet")
        )
        tiles = json.loads((run / "label_subset.json").read_text())["tiles"]
        subsets.setdefault(r["seed"], set()).add(json.dumps(tiles))
    assert all(len(v) == 1 for v in subsets.values())  # one subset per seed, shared by every row
    assert len({next(iter(v)) for v in subsets.values()}) == len(subsets)  # each seed its own


def _check_statistics(tmp_path, rows: list[dict], ev: str) -> None:
    """summary.json against a hand computation: mean, sample std, paired Δ and its t-interval."""
    summary = json.loads((tmp_path / "summary.json").read_text())
    recomputed = json.loads(json.dumps(summarize_rows(rows)).replace("NaN", "null"))
    key = lambda e: (e["init"], str(e["transfer"]), e["eval"])  # noqa: E731
    assert sorted(summary, key=key) == sorted(recomputed, key=key)
    entry = next(e for e in summary if (e["init"], e["eval"]) == ("glcnet", ev))
    mine = {r["seed"]: r["mIoU"] for r in rows if (r["init"], r["eval"]) == ("glcnet", ev)}
    base = {r["seed"]: r["mIoU"] for r in rows if (r["init"], r["eval"]) == ("random", ev)}
    assert entry["mIoU_mean"] == pytest.approx((mine[0] + mine[1]) / 2)
    assert entry["mIoU_std"] == pytest.approx(abs(mine[0] - mine[1]) / math.sqrt(2))
    d = [mine[s] - base[s] for s in (0, 1)]
    half = student_t.ppf(0.975, 1) * abs(d[0] - d[1]) / math.sqrt(2) / math.sqrt(2)
    assert entry["delta"]["mIoU"]["mean"] == pytest.approx(sum(d) / 2)
    assert entry["delta"]["mIoU"]["low"] == pytest.approx(sum(d) / 2 - half)
    assert entry["delta"]["mIoU"]["high"] == pytest.approx(sum(d) / 2 + half)
    table = (tmp_path / "results.md").read_text()
    assert f"| glcnet | encoder | {ev} | 5% |" in table and "95 % Student-t" in table
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("init,transfer,eval,label_fraction,labeled_tiles,seed,mIoU")
    assert len(csv_lines) == 1 + len(rows)


def test_protocol_rows_statistics_and_provenance(tiny_sample_root, tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    args = _tiny_protocol_args(tiny_sample_root)
    args["method_overrides"] = {"glcnet": ["method.temperature=0.25"]}
    rows = run_protocol(output_dir=tmp_path, seeds=[0, 1], evals=["finetune"], **args)
    assert [(r["init"], r["transfer"], r["eval"], r["seed"]) for r in rows] == [
        ("random", None, "finetune", 0),
        ("random", None, "finetune", 1),
        ("glcnet", "encoder", "finetune", 0),
        ("glcnet", "encoder", "finetune", 1),
    ]
    used = (tmp_path / "pretrain_glcnet" / "config.yaml").read_text()
    assert "temperature: 0.25" in used  # the method's own overrides reach its pretraining
    assert calls["pretrain"] == [(None, 2, -1)]  # protocol.pretrain_steps, once per method
    _check_rows(tmp_path, rows)
    _check_statistics(tmp_path, rows, "finetune")
    assert (tmp_path / "results.png").stat().st_size > 1000

    # everything finished: a resume only re-reads
    again = run_protocol(output_dir=tmp_path, seeds=[0, 1], evals=["finetune"], resume=True, **args)
    assert again == rows and len(calls["finetune"]) == 4 and len(calls["pretrain"]) == 1
    refused = [
        (
            {"finetune_overrides": [*args["finetune_overrides"], "optimizer.lr=0.1"]},
            "finetune_overrides",
        ),
        ({"method_overrides": {"glcnet": ["method.temperature=0.2"]}}, "glcnet was pretrained"),
        ({"eval_overrides": {"finetune": ["optimizer.lr=2e-3"]}}, "eval finetune was run"),
        ({"pretrain_steps": 3}, "pretrain_steps"),
    ]
    for change, match in refused:
        with pytest.raises(ProtocolResumeError, match=match):
            run_protocol(output_dir=tmp_path, seeds=[0], resume=True, **{**args, **change})
    assert json.loads((tmp_path / "results.json").read_text()) == rows  # refusals change nothing
    assert len(calls["finetune"]) == 4
    with pytest.raises(ProtocolResumeError, match="nothing to resume"):
        run_protocol(output_dir=tmp_path / "new", resume=True, **args)


@pytest.mark.slow
def test_protocol_resume_continues_pretraining_and_adds_seeds_and_evals(
    tiny_sample_root, tmp_path, monkeypatch
):
    calls = _spy(monkeypatch)
    args = _tiny_protocol_args(tiny_sample_root)
    first = run_protocol(output_dir=tmp_path, seeds=[0], evals=["finetune"], **args)
    # an interrupted pretraining (weights gone, checkpoint left); seed 1 and the linear probe added
    (tmp_path / "pretrain_glcnet" / "pretrained.safetensors").unlink()
    rows = run_protocol(
        output_dir=tmp_path, seeds=[0, 1], evals=["finetune", "linear"], resume=True, **args
    )
    last = str(tmp_path / "pretrain_glcnet" / "checkpoints" / "last.ckpt")
    assert calls["pretrain"][1][0] == last  # continued from its checkpoint
    keys = {(r["init"], r["transfer"], r["eval"], r["seed"]) for r in rows}
    assert keys == {
        (init, tr, ev, s)
        for s in (0, 1)
        for init, tr, ev in [
            ("random", None, "finetune"),
            ("random", "encoder", "linear"),
            ("glcnet", "encoder", "finetune"),
            ("glcnet", "encoder", "linear"),
        ]
    }
    kept = {r["run"]: r for r in rows}
    assert all(kept[r["run"]] == r for r in first)  # kept, not recomputed
    assert len(calls["finetune"]) == 8
    _check_rows(tmp_path, rows)
    _check_statistics(tmp_path, rows, "linear")
    with pytest.raises(ProtocolResumeError, match="eval linear was run"):
        run_protocol(
            output_dir=tmp_path,
            seeds=[0],
            evals=["finetune", "linear"],
            resume=True,
            **{**args, "eval_overrides": {"linear": ["optimizer.lr=0.5"]}},
        )


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"finetune_overrides": ["data.eroded=true"]},
            "data settings must be the same for every stage",
        ),
        ({"evaluate_overrides": ["data.root=/elsewhere"]}, "put it in protocol.common_overrides"),
        ({"pretrain_overrides": ["model.encoder=resnet34"]}, "model settings must be the same"),
        ({"finetune_overrides": ["seed=3"]}, "which the protocol sets itself"),
        ({"common_overrides": ["probe=linear"]}, "which the protocol sets itself"),
        ({"evals": ["finetune", "knn"]}, "choose among"),
        ({"finetune_variants": {"a.b": ["bn_mode=frozen_stats"]}}, "finetune_variants name"),
        ({"finetune_variants": {"lr0": {"1": ["x=1"]}}}, "must be a list of overrides"),
        ({"seeds": [1, 1]}, "distinct seeds"),
        (
            {"pretrain_steps": 10, "pretrain_overrides": ["trainer.max_steps=5"]},
            "keep one of them",
        ),
    ],
)
def test_protocol_refuses_settings_that_would_make_rows_incomparable(
    change, match, tmp_path, monkeypatch
):
    import glcnet.protocol as protocol

    def no_work(cfg):
        raise AssertionError("a refused protocol must not start any stage")

    monkeypatch.setattr(protocol, "run_pretrain", no_work)
    monkeypatch.setattr(protocol, "run_finetune", no_work)
    args = {
        "config_dir": str(CONFIG_DIR),
        "common_overrides": ["data.tile_size=64"],
        "finetune_overrides": ["data.batch_size=4"],  # loader settings may differ per stage
        **change,
    }
    with pytest.raises(ProtocolConfigError, match=match):
        run_protocol(output_dir=tmp_path, **args)
    assert not (tmp_path / "protocol_state.json").exists()  # refused before any work


@pytest.mark.parametrize(
    "experiment", ["demo", "protocol_cpu", "protocol_sample", "protocol_methods"]
)
def test_protocol_experiments_pass_the_protocol_checks(experiment, tmp_path):
    from conftest import compose_config
    from omegaconf import OmegaConf

    cfg = compose_config("protocol", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    args = OmegaConf.to_container(cfg.protocol, resolve=True)
    args["resume"] = True  # stops right after the checks: nothing to resume in an empty folder
    with pytest.raises(ProtocolResumeError, match="nothing to resume"):
        run_protocol(config_dir=str(CONFIG_DIR), output_dir=tmp_path, **args)


def test_protocol_cli_refusal_is_one_line(tmp_path):
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "protocol.py"),
        "experiment=demo",
        'protocol.finetune_overrides=["data.eroded=true"]',
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "data.eroded=true" in err[0] and "common_overrides" in err[0]


@pytest.mark.slow
def test_protocol_cli_demo_with_seeds_and_every_eval(tiny_sample_root, tmp_path):
    """The command of issue 12, shrunk to seconds per stage, through the real CLI."""
    data = [o for o in tiny_overrides(tiny_sample_root, tmp_path, train=False) if "paths." not in o]
    quoted = lambda xs: "[" + ",".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "protocol.py"),
        "experiment=demo",
        "protocol.seeds=[0,1]",
        "protocol.evals=[finetune,frozen,linear]",
        "protocol.label_fractions=[0.05]",
        "protocol.pretrain_steps=2",
        f"protocol.common_overrides={quoted(data)}",
        f"protocol.pretrain_overrides={quoted([*TRAIN, 'augment.size=64', 'augment.region_size=16'])}",
        f"protocol.finetune_overrides={quoted([*TRAIN, 'trainer.max_steps=2', 'samples_per_epoch=8'])}",
        f"protocol.evaluate_overrides={quoted(['overlap=0', 'split=val'])}",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 12  # (random, glcnet) x (finetune, frozen, linear) x 2 seeds
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 6 and all(e["n"] == 2 for e in summary)
    for e in summary:
        mine = [r["mIoU"] for r in rows if (r["init"], r["eval"]) == (e["init"], e["eval"])]
        assert e["mIoU_mean"] == pytest.approx(sum(mine) / 2)
        if e["init"] == "glcnet":
            base = {
                r["seed"]: r["mIoU"]
                for r in rows
                if (r["init"], r["eval"]) == ("random", e["eval"])
            }
            paired = [r["mIoU"] - base[r["seed"]] for r in rows
                      if (r["init"], r["eval"]) == ("glcnet", e["eval"])]  # fmt: skip
            assert e["delta"]["mIoU"]["mean"] == pytest.approx(sum(paired) / 2)
    assert "Δ mIoU vs random" in proc.stdout and "| glcnet | encoder | frozen | 5% |" in proc.stdout
