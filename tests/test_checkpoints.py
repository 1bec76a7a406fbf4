"""Checkpoint files are data: unsafe pickles are refused unread, writes are atomic."""

from __future__ import annotations

import os

import pytest
import torch
from cli import run_commands, tiny_args

from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import (
    CheckpointReadError,
    CheckpointWriteError,
    SafeCheckpointIO,
    UnsafeCheckpointError,
    atomic_write,
    load_torch_file,
    remove_stale_temporaries,
    save_torch_file,
)
from glcnet.training.export import export_pretrained, load_pretrained, read_pretrained


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_file(path, marker) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Payload(marker)}, path)


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path):
    """The fixture really runs code under a plain unpickler (so the refusals below mean something)."""
    malicious_file(tmp_path / "evil.ckpt", tmp_path / "ran")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_unsafe_pickle_is_refused_without_running(tmp_path):
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "ran"
    malicious_file(evil, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt: refused.*posix\.system"):
        load_torch_file(evil)
    with pytest.raises(UnsafeCheckpointError):
        SafeCheckpointIO().load_checkpoint(evil)  # Lightning's resume path
    with pytest.raises(UnsafeCheckpointError):
        read_pretrained(evil)
    assert not marker.exists()


def test_cli_refuses_a_malicious_checkpoint_in_one_line(tiny_sample_root, tmp_path):
    """As pretrained= (fine-tuning), checkpoint= (evaluation) and ckpt_path= (resume)."""
    evil, marker = tmp_path / "shared_weights.pt", tmp_path / "ran"
    malicious_file(evil, marker)
    commands = [
        ("finetune.py", [*tiny_args(tiny_sample_root), f"pretrained={evil}"]),
        ("evaluate.py", [*tiny_args(tiny_sample_root, train=False), f"checkpoint={evil}"]),
        ("pretrain.py", [*tiny_args(tiny_sample_root), "augment.size=64", f"ckpt_path={evil}"]),
    ]
    commands = [(s, [*a, f"hydra.run.dir={tmp_path / s}"]) for s, a in commands]
    for (script, _), res in zip(commands, run_commands(commands, cwd=tmp_path)):
        assert res["code"] == 2, (script, res["stderr"][-3000:])
        assert "Traceback" not in res["stderr"]
        line = res["stderr"].strip().splitlines()[-1]
        assert line.startswith(f"error: {evil}: refused to load"), line
        assert "posix.system" in line
    assert not marker.exists()


def test_corrupt_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointReadError, match="junk.ckpt: cannot be read"):
        load_torch_file(tmp_path / "junk.ckpt")
    with pytest.raises(CheckpointReadError, match="not found"):
        load_torch_file(tmp_path / "absent.ckpt")
    torch.save({"a": 1, "b": [2.0, "c"], "t": torch.ones(2)}, tmp_path / "plain.pt")
    loaded = load_torch_file(tmp_path / "plain.pt")  # plain data and tensors are fine
    assert loaded["b"] == [2.0, "c"] and torch.equal(loaded["t"], torch.ones(2))


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    target = tmp_path / "last.ckpt"
    save_torch_file({"step": 1}, target)

    def dies_half_way(fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="No space left on device; earlier files"):
        atomic_write(target, dies_half_way)
    assert load_torch_file(target) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left


def test_unwritable_target_is_a_write_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CheckpointWriteError, match="cannot write"):
        save_torch_file({"x": 1}, blocker / "sub" / "last.ckpt")


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".tmp-last.ckpt.abc123").write_bytes(b"half")
    (tmp_path / "last.ckpt").write_bytes(b"whole")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".tmp-last.ckpt.abc123"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_export_is_safetensors_with_record_and_old_pt_exports_still_load(tmp_path):
    torch.manual_seed(0)
    model = Segmenter("resnet18", in_channels=4, num_classes=6, decoder_channels=32)
    record = {"data": {"in_channels": 4, "band_names": ["R", "G", "B", "IR"]}}
    path = export_pretrained(model, tmp_path / "pretrained.safetensors", record=record, steps=3)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: header length, then JSON
    parts, rec = read_pretrained(path)
    assert rec == record
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(parts["encoder"][key], value)
    # an export of the first versions: a torch file with format glcnet-pretrained-v1
    old = tmp_path / "pretrained.pt"
    torch.save(
        {
            "format": "glcnet-pretrained-v1",
            "encoder": model.encoder.state_dict(),
            "decoder": model.decoder.state_dict(),
            "meta": {"encoder_name": "resnet18", "in_channels": 4},
        },
        old,
    )
    fresh = Segmenter("resnet18", in_channels=4, num_classes=6, decoder_channels=32)
    assert load_pretrained(fresh, old, transfer="encoder+decoder") == ["encoder", "decoder"]
    for key, value in model.decoder.state_dict().items():
        assert torch.equal(fresh.decoder.state_dict()[key], value)
