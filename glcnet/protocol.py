"""The few-label protocol: pretrain, fine-tune / probe every init over seeds, tabulate with statistics.

Each method is pretrained once; every init is then fine-tuned, frozen-trained or linearly probed on
label subsets shared by all inits (one per label fraction and seed), evaluated on whole test scenes,
and tabulated with mean ± std over seeds and paired differences to random init.

Every stage is the same run function the scripts use, composed from the real configs with Hydra's
compose API, so a protocol row can be reproduced by hand with the printed overrides. Every stage of
a row sees the same data and model configuration: data and model settings go in
``common_overrides`` (used by pretraining, fine-tuning and evaluation alike), and a stage-specific
list that would change them for one stage only is refused.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from glcnet.protocol_results import (
    METRIC_KEYS,
    eval_kind,
    format_table,
    row_key,
    write_results,
)
from glcnet.training.evaluate import run_evaluate
from glcnet.training.export import load_pretrained
from glcnet.training.finetune import run_finetune
from glcnet.training.pretrain import run_pretrain
from glcnet.training.provenance import INIT_RECORD, state_fingerprint
from glcnet.training.resume import LAST_NAME, checkpoint_dir
from glcnet.utils.config import instantiate, register_resolvers

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_KEYS",
    "ProtocolConfigError",
    "ProtocolError",
    "ProtocolIntegrityError",
    "ProtocolResumeError",
    "compose_stage",
    "format_table",
    "run_protocol",
]

STATE_VERSION = 2
#: The evaluations of a row and the ``finetune.py probe=`` setting each one runs.
EVAL_PROBES = {"finetune": "none", "frozen": "frozen", "linear": "linear"}
#: Keys the protocol sets itself; user override lists must not set them.
OWNED_KEYS = {
    "seed",
    "pretrained",
    "transfer",
    "probe",
    "subset_file",
    "label_seed",
    "checkpoint",
    "ckpt_path",
    "paths.output_dir",
    "data.label_fraction",
    "data.label_count",
}
#: Data keys a single stage may set (loaders, and which splits pretraining reads unlabeled).
STAGE_DATA_KEYS = {
    "pretrain": {
        "data.batch_size",
        "data.eval_batch_size",
        "data.num_workers",
        "data.pretrain_splits",
    },
    "finetune": {"data.batch_size", "data.eval_batch_size", "data.num_workers"},
    "evaluate": {"data.batch_size", "data.eval_batch_size", "data.num_workers"},
}
#: Data settings that differ legitimately between the stages of a row (not compared).
LOADER_KEYS = {
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "pretrain_splits",
    "label_fraction",
    "label_count",
}


class ProtocolError(ValueError):
    """Protocol settings that cannot be run as given (reported as one line by the script)."""


class ProtocolResumeError(ProtocolError):
    """The folder to resume holds a protocol run made with other settings."""


class ProtocolConfigError(ProtocolError):
    """An override list or evaluation setting that the protocol refuses."""


class ProtocolIntegrityError(RuntimeError):
    """A row's stages did not get what the protocol gave them (a bug, never the user's input)."""


def compose_stage(config_dir: str, name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose one stage's config (``pretrain``, ``finetune`` or ``evaluate``) with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def override_key(override: str) -> str:
    """The config key of a Hydra override (``+data.x=1`` -> ``data.x``, ``data=folder`` -> ``data``)."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def check_overrides(where: str, overrides: Sequence[str], stage: str | None) -> None:
    """Refuse overrides the protocol owns, and data/model settings given to one stage only.

    Args:
        where: Name of the list in messages (e.g. ``protocol.finetune_overrides``).
        overrides: The list.
        stage: ``pretrain``, ``finetune`` or ``evaluate`` for a stage-specific list; None for a
            list every stage receives (``common_overrides``).

    Raises:
        ProtocolConfigError: One line naming the entry and where it belongs.
    """
    for entry in overrides:
        key = override_key(entry)
        if key in OWNED_KEYS:
            raise ProtocolConfigError(
                f"{where} holds {entry!r}, which the protocol sets itself for every row "
                "(protocol.seeds, protocol.label_fractions, protocol.transfers, protocol.evals); "
                "remove it"
            )
        if stage is None:
            continue
        group = key.split(".", 1)[0]
        if group in ("data", "model") and key not in STAGE_DATA_KEYS[stage]:
            raise ProtocolConfigError(
                f"{where} holds {entry!r}: {group} settings must be the same for every stage of "
                "a row (pretraining, fine-tuning, evaluation); put it in "
                "protocol.common_overrides"
            )


def data_identity(cfg: DictConfig) -> dict:
    """The data settings of a composed stage config that every stage of a row must share."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {k: v for k, v in data.items() if k not in LOADER_KEYS}


def _eval_list(evals: Sequence[str], variants: Mapping[str, Sequence[str]]) -> list[str]:
    names = list(evals)
    unknown = [e for e in names if e not in EVAL_PROBES]
    if unknown:
        raise ProtocolConfigError(
            f"protocol.evals holds {unknown}; choose among {sorted(EVAL_PROBES)} "
            "(recipe variants go in protocol.finetune_variants)"
        )
    for name, value in variants.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
            raise ProtocolConfigError(
                f"protocol.finetune_variants name {name!r}: use letters, digits, '_' and '-' only"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProtocolConfigError(
                f"protocol.finetune_variants.{name} must be a list of overrides, got {value!r}"
            )
    return list(dict.fromkeys([*names, *(f"finetune:{v}" for v in variants)]))


def run_protocol(
    config_dir: str,
    output_dir: str | Path,
    methods: Sequence[str] = ("glcnet",),
    label_fractions: Sequence[float] = (0.01, 0.05),
    include_random_init: bool = True,
    transfers: Sequence[str] = ("encoder",),
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    evals: Sequence[str] = ("finetune",),
    eval_overrides: Mapping[str, Sequence[str]] | None = None,
    finetune_variants: Mapping[str, Sequence[str]] | None = None,
    pretrain_steps: int | None = None,
    common_overrides: Sequence[str] = (),
    pretrain_overrides: Sequence[str] = (),
    finetune_overrides: Sequence[str] = (),
    evaluate_overrides: Sequence[str] = (),
    method_overrides: Mapping[str, Sequence[str]] | None = None,
    resume: bool = False,
) -> list[dict]:
    """Run the protocol and write results.{json,csv,md,png} and summary.json.

    Inits run one after the other (random first, then each method: pretraining, then its rows),
    and the result files are rewritten after every row. A row is (init, transfer, eval, label
    fraction, seed): the init's network, with ``transfer`` handed over from pretraining, is
    fine-tuned (``finetune``), trained with the transferred part frozen (``frozen``) or probed
    linearly (``linear``) on the label subset of (fraction, seed), then evaluated on the test split.
    Random init gets the same evaluations; its ``finetune`` rows do not depend on a transfer (one
    row, transfer None) while its ``frozen`` / ``linear`` rows freeze / probe the same part as the
    pretrained rows they are compared with.

    Args:
        config_dir: Absolute path of the ``configs/`` folder.
        output_dir: Folder receiving one sub-folder per stage and the result files.
        methods: Pretraining method configs (``method=<name>``) compared with random init.
        label_fractions: Labeled fractions of the training tiles.
        include_random_init: Add the random-initialisation baseline.
        transfers: What each pretrained network hands over (``encoder`` and/or
            ``encoder+decoder``); every choice is a row of its own.
        seed: Seed of every pretraining (done once per method).
        seeds: Seeds of the rows: each draws its own label subset per fraction (shared by every
            init) and seeds the fine-tuning; None: ``[seed]``.
        evals: Among ``finetune``, ``frozen``, ``linear``.
        eval_overrides: Extra fine-tuning overrides per eval, e.g. ``{"linear":
            ["optimizer.lr=1e-2"]}`` (``finetune`` entries also apply to its variants).
        finetune_variants: Fine-tuning recipes compared under identical conditions: each
            ``name: [overrides]`` adds the eval ``finetune:<name>`` for every init, e.g.
            ``{"enc_lr01": ["optimizer.encoder_lr_scale=0.1"]}`` (names: letters, digits, ``_``,
            ``-``).
        pretrain_steps: Optimizer steps of every pretraining (``trainer.max_steps``, with
            ``trainer.max_epochs=-1``); None: as the overrides say.
        common_overrides: Overrides of every stage: data and model settings go here.
        pretrain_overrides: Overrides of the pretraining runs.
        finetune_overrides: Overrides of the fine-tuning runs.
        evaluate_overrides: Overrides of the evaluation runs.
        method_overrides: Extra pretraining overrides per method, e.g.
            ``{"simclr": ["augment=simclr"]}``.
        resume: Complete the protocol run already in ``output_dir`` (same settings required;
            methods, fractions, transfers, seeds, evals and variants may be added).

    Returns:
        Per-seed rows: ``init``, ``transfer``, ``eval``, ``label_fraction``, ``labeled_tiles``,
        ``seed``, the metrics, ``pretrain_s``, ``finetune_s``, ``evaluate_s``, ``pretrained``
        (weights file or None) and ``run`` (the fine-tuning folder).

    Raises:
        ProtocolResumeError: ``resume`` on a folder whose run used other settings.
        ProtocolConfigError: Override lists or evals the protocol refuses.
    """
    register_resolvers()
    out = Path(output_dir)
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ProtocolConfigError(f"protocol.seeds must be distinct seeds, got {seeds}")
    method_overrides = {k: list(v) for k, v in (method_overrides or {}).items()}
    variants = {
        k: list(v) if isinstance(v, list | tuple) else v
        for k, v in (finetune_variants or {}).items()
    }
    eval_overrides = {k: list(v) for k, v in (eval_overrides or {}).items()}
    eval_names = _eval_list(evals, variants)
    bad = sorted(set(eval_overrides) - set(EVAL_PROBES))
    if bad:
        raise ProtocolConfigError(f"protocol.eval_overrides has entries for unknown evals {bad}")
    check_overrides("protocol.common_overrides", common_overrides, None)
    check_overrides("protocol.pretrain_overrides", pretrain_overrides, "pretrain")
    check_overrides("protocol.finetune_overrides", finetune_overrides, "finetune")
    check_overrides("protocol.evaluate_overrides", evaluate_overrides, "evaluate")
    for name, extra in method_overrides.items():
        check_overrides(f"protocol.method_overrides.{name}", extra, "pretrain")
    for name, extra in eval_overrides.items():
        check_overrides(f"protocol.eval_overrides.{name}", extra, "finetune")
    for name, extra in variants.items():
        check_overrides(f"protocol.finetune_variants.{name}", extra, "finetune")
    if pretrain_steps is not None:
        for where, extra in [
            ("pretrain_overrides", pretrain_overrides),
            *((f"method_overrides.{m}", v) for m, v in method_overrides.items()),
        ]:
            clash = [
                o for o in extra if override_key(o) in ("trainer.max_steps", "trainer.max_epochs")
            ]
            if clash:
                raise ProtocolConfigError(
                    f"protocol.{where} holds {clash[0]!r} while protocol.pretrain_steps="
                    f"{pretrain_steps} sets the pretraining length; keep one of them"
                )
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "seed": seed,
        "pretrain_steps": pretrain_steps,
        "common_overrides": list(common_overrides),
        "pretrain_overrides": list(pretrain_overrides),
        "finetune_overrides": list(finetune_overrides),
        "evaluate_overrides": list(evaluate_overrides),
    }
    state = _open_state(out, settings, resume)
    for name in eval_names:
        own = [*eval_overrides.get(eval_kind(name), [])]
        if name.startswith("finetune:"):
            own += variants[name.split(":", 1)[1]]
        _remember(out, state, "eval_overrides", name, own, f"eval {name} was run")
    for method in methods:  # checked before any row, so a refused resume changes nothing
        own = method_overrides.get(method, [])
        _remember(out, state, "method_overrides", method, own, f"{method} was pretrained")
    done = {row_key(r): r for r in _load_rows(out)} if resume else {}
    steps = (
        [f"trainer.max_steps={int(pretrain_steps)}", "trainer.max_epochs=-1"]
        if pretrain_steps is not None
        else []
    )
    order = {
        "init": (["random"] if include_random_init else []) + list(methods),
        "eval": eval_names,
        "transfer": list(transfers),
    }
    rows: list[dict] = []
    runner = _RowRunner(config_dir, out, state, common_overrides, finetune_overrides, resume)

    def finish(row: dict) -> None:
        rows.append(row)
        write_results(out, rows, order, state["pretrain_s"], plot=False)

    def run_rows(init: str, weights: str | None, plan: list[tuple[str | None, str]]) -> None:
        for transfer, ev in plan:
            for fraction in label_fractions:
                for s in seeds:
                    key = (init, transfer, ev, fraction, s)
                    if key in done:
                        finish(done[key])
                        continue
                    row = runner.row(
                        init,
                        weights,
                        transfer,
                        ev,
                        EVAL_PROBES[eval_kind(ev)],
                        state["eval_overrides"][ev],
                        fraction,
                        s,
                        evaluate_overrides,
                    )
                    row["pretrain_s"] = round(state["pretrain_s"].get(init, 0.0), 1)
                    finish(row)
        if rows:  # the plot once per init (it takes a second or two)
            write_results(out, rows, order, state["pretrain_s"])

    if include_random_init:
        plan = [(None, ev) for ev in eval_names if eval_kind(ev) == "finetune"]
        plan += [(t, ev) for t in transfers for ev in eval_names if eval_kind(ev) != "finetune"]
        run_rows("random", None, plan)
    for method in methods:
        own = method_overrides.get(method, [])
        plan = [(t, ev) for t in transfers for ev in eval_names]
        needed = any(
            (method, t, ev, f, s) not in done
            for t, ev in plan
            for f in label_fractions
            for s in seeds
        )
        weights = None
        if needed:
            weights, seconds = _pretrain(
                config_dir, out, [*common_overrides, f"seed={seed}"], method,
                [*pretrain_overrides, *own, *steps], resume,
            )  # fmt: skip
            if seconds is not None:  # None: an earlier run's weights were kept
                state["pretrain_s"][method] = seconds
            _save_state(out, state)
        run_rows(method, weights, plan)
    GlobalHydra.instance().clear()
    return rows


class _RowRunner:
    """Runs one row: fine-tune (or probe) on the subset of (fraction, seed), then evaluate."""

    def __init__(
        self,
        config_dir: str,
        out: Path,
        state: dict,
        common: Sequence[str],
        finetune: Sequence[str],
        resume: bool = False,
    ) -> None:
        self.config_dir = config_dir
        self.resume = resume
        self.out = out
        self.state = state
        self.common = list(common)
        self.finetune = list(finetune)
        self._fingerprints: dict[tuple[str, str], dict[str, str]] = {}

    def row(
        self,
        init: str,
        weights: str | None,
        transfer: str | None,
        ev: str,
        probe: str,
        extra: Sequence[str],
        fraction: float,
        seed: int,
        evaluate_overrides: Sequence[str],
    ) -> dict:
        """Fine-tune / probe, check the initialisation, evaluate; returns the per-seed row."""
        base = [*self.common, f"seed={seed}"]
        part = transfer or "encoder"
        tag = "_".join(
            [
                init if transfer in (None, "encoder") else f"{init}_{part.replace('+', '_')}",
                ev.replace(":", "-"),
                f"frac{fraction:g}",
                f"seed{seed}",
            ]
        )
        subset_key = f"{fraction:g}@{seed}"
        subset = self.state["subsets"].get(subset_key)
        ft = [f"data.label_fraction={fraction}", *self.finetune, *extra]
        ft += [f"pretrained={weights}" if weights else "pretrained=null"]
        ft += [f"transfer={part}", f"probe={probe}"]
        ft += [f"subset_file={subset}"] if subset else []
        ft += ["ckpt_path=last"] if self.resume else []  # an interrupted row continues exactly
        ft += [f"paths.output_dir={self.out}/finetune_{tag}"]
        log.info("row %s: finetune.py %s", tag, " ".join([*base, *ft]))
        ft_cfg = compose_stage(self.config_dir, "finetune", [*base, *ft])
        t0 = time.perf_counter()
        fres = run_finetune(ft_cfg)
        t_ft = time.perf_counter() - t0
        self._check_init(Path(fres["output_dir"]), ft_cfg, weights, part)
        self.state["subsets"].setdefault(subset_key, str(fres["subset_file"]))
        _save_state(self.out, self.state)
        ev_overrides = [
            *base,
            *evaluate_overrides,
            f"checkpoint={fres['best_checkpoint']}",
            f"paths.output_dir={self.out}/evaluate_{tag}",
        ]
        ev_cfg = compose_stage(self.config_dir, "evaluate", ev_overrides)
        if data_identity(ev_cfg) != data_identity(ft_cfg):
            raise ProtocolIntegrityError(
                f"row {tag}: fine-tuning and evaluation data settings differ"
            )
        t0 = time.perf_counter()
        eres = run_evaluate(ev_cfg, overrides=ev_overrides)
        t_ev = time.perf_counter() - t0
        labeled = json.loads(Path(fres["subset_file"]).read_text())["count"]
        row = {
            "init": init,
            "transfer": transfer,
            "eval": ev,
            "label_fraction": fraction,
            "labeled_tiles": labeled,
            "seed": seed,
        }
        row.update({k: float(eres["metrics"][k]) for k in METRIC_KEYS})
        row.update(
            {
                "finetune_s": round(t_ft, 1),
                "evaluate_s": round(t_ev, 1),
                "pretrained": weights,
                "run": f"finetune_{tag}",
            }
        )
        log.info("%s: %s", tag, row)
        return row

    def _check_init(self, run: Path, cfg: DictConfig, weights: str | None, transfer: str) -> None:
        """The run started from ``weights`` (its transferred parts), or from no file at all."""
        record = json.loads((run / INIT_RECORD).read_text())
        if weights is None:
            if record["pretrained"] is not None or record["loaded"]:
                raise ProtocolIntegrityError(
                    f"{run}: a random-init row was initialised from a file"
                )
            return
        key = (weights, transfer)
        if key not in self._fingerprints:
            model = instantiate(cfg.model)
            load_pretrained(model, weights, transfer=transfer)
            self._fingerprints[key] = {
                "encoder": state_fingerprint(model.encoder.state_dict()),
                "decoder": state_fingerprint(model.decoder.state_dict()),
            }
        expect = self._fingerprints[key]
        parts = ["encoder"] if transfer == "encoder" else ["encoder", "decoder"]
        if record["pretrained"] != str(weights) or any(
            record[f"{p}_sha256"] != expect[p] for p in parts
        ):
            raise ProtocolIntegrityError(f"{run}: its initial weights are not those of {weights}")


def _remember(out: Path, state: dict, table: str, name: str, value: list, what: str) -> None:
    """Record per-method / per-eval overrides; refuse a resume that changes them."""
    earlier = state[table].get(name)
    if earlier is not None and earlier != value:
        raise ProtocolResumeError(
            f"{out}: {what} with {table.replace('_', ' ')} {earlier}, not {value}; resume with "
            "the overrides it was started with, or start a new run"
        )
    state[table][name] = value
    _save_state(out, state)


def _pretrain(
    config_dir: str,
    out: Path,
    base: Sequence[str],
    method: str,
    overrides: Sequence[str],
    resume: bool,
) -> tuple[str, float | None]:
    """Pretrain ``method`` (or reuse / continue an earlier attempt).

    Returns:
        The weights file and the seconds spent, None when finished weights were kept.
    """
    folder = out / f"pretrain_{method}"
    # ckpt_path=last: an interrupted pretraining continues where its last.ckpt stopped
    cont = ["ckpt_path=last"] if resume else []
    cfg = compose_stage(
        config_dir,
        "pretrain",
        [*base, f"method={method}", *overrides, *cont, f"paths.output_dir={folder}"],
    )
    export = folder / cfg.export_name
    if resume and export.is_file():
        log.info("pretrained %s: kept from the earlier run (%s)", method, export)
        return str(export), None
    if resume and (checkpoint_dir(folder) / LAST_NAME).is_file():
        log.info("pretraining %s continues from its last checkpoint", method)
    t0 = time.perf_counter()
    result = run_pretrain(cfg)
    seconds = time.perf_counter() - t0
    log.info("pretrained %s in %.0f s", method, seconds)
    return str(result["export"]), seconds


def _open_state(out: Path, settings: dict, resume: bool) -> dict:
    """Read (``resume``) or start the run's ``protocol_state.json``.

    It holds the settings every row shares, the label subset of each (fraction, seed), each
    method's pretraining time and extra overrides, and each eval's overrides.
    """
    path = out / "protocol_state.json"
    if resume and path.is_file():
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise ProtocolResumeError(
                f"{out} holds a protocol run of an older glcnet (no per-seed rows); start a new run"
            )
        if state["settings"] != settings:
            diff = sorted(k for k in settings if state["settings"].get(k) != settings[k])
            raise ProtocolResumeError(
                f"{out} holds a protocol run with other settings ({', '.join(diff)} differ); "
                "resume it with the settings it was started with, or start a new run"
            )
        return state
    if resume:
        raise ProtocolResumeError(f"nothing to resume in {out}: no protocol_state.json there")
    state = {
        "version": STATE_VERSION,
        "settings": settings,
        "subsets": {},
        "pretrain_s": {},
        "method_overrides": {},
        "eval_overrides": {},
    }
    _save_state(out, state)
    return state


def _save_state(out: Path, state: dict) -> None:
    (out / "protocol_state.json").write_text(json.dumps(state, indent=1))


def _load_rows(out: Path) -> list[dict]:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []
