"""Pretraining end to end on a tiny model: it learns, resumes exactly, survives kill -9, and its
runs and models can be listed, plotted and generated from."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llmos.errors import ConfigError
from llmos.train import RunStore, add_commands, pretrain
from llmos.train.checkpoints import latest_checkpoint, load_checkpoint
from llmos.train.pretraining import resume_config
from tests.train.conftest import tiny_values


def _cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_loss_decreases_and_model_is_saved(tiny_cfg, llmos_home: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(train={"max_iters": 40, "learning_rate": 1e-2}, eval={"interval": 20, "iters": 4})
    result = pretrain(cfg, out_dir=str(tmp_path / "run"), name="tiny-shakespeare:v1")
    store = RunStore()
    val = store.metrics(result.run_id, "val/loss")
    assert [s for s, _ in val] == [0, 20, 40]
    assert val[-1][1] < val[0][1] - 0.5  # from ~4.2 (uniform over the characters) to well below
    train = [v for _, v in store.metrics(result.run_id, "train/loss")]
    assert len(train) == 40 and sum(train[-5:]) < sum(train[:5])
    run = store.get(result.run_id)
    assert run.status == "finished" and run.summary["steps"] == 40

    lineage = json.loads((result.model_dir / "llmos.json").read_text())
    assert lineage["data"]["digest"] and lineage["training_config"]["train"]["max_iters"] == 40
    assert lineage["run_id"] == result.run_id and lineage["code_version"]

    from llmos.engine import LLM

    llm = LLM.load("tiny-shakespeare:v1")
    text = llm.generate("ROMEO:", max_new_tokens=20, temperature=0)
    assert len(text) == 20


def test_resume_continues_exactly(tiny_cfg, llmos_home: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(model={"dropout": 0.1})  # dropout: the RNG streams must be restored too
    full = pretrain(cfg, out_dir=str(tmp_path / "full"))
    cut = pretrain(cfg, out_dir=str(tmp_path / "cut"), stop_at=10)  # "crashes" after step 10
    assert cut.model_dir is None and latest_checkpoint(tmp_path / "cut").name == "step-0000008"
    resumed = pretrain(resume_config(tmp_path / "cut"), resume=str(tmp_path / "cut"))
    assert resumed.run_id == cut.run_id

    store = RunStore()
    for key in ("train/loss", "val/loss", "train/grad_norm"):
        a, b = store.metrics(full.run_id, key), store.metrics(cut.run_id, key)
        assert [s for s, _ in a] == [s for s, _ in b]
        assert torch.allclose(torch.tensor([v for _, v in a]), torch.tensor([v for _, v in b]), rtol=1e-5)
    wa = load_file(full.model_dir / "model.safetensors")
    wb = load_file(resumed.model_dir / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_checkpoints_keep_last_and_best(tiny_cfg, llmos_home: Path, tmp_path: Path) -> None:
    result = pretrain(tiny_cfg(checkpoint={"interval": 2, "keep_last": 2}), out_dir=str(tmp_path / "r"))
    root = result.run_dir / "checkpoints"
    steps = sorted(p.name for p in root.iterdir() if p.name.startswith("step-"))
    best = json.loads((root / "best.json").read_text())["dir"]
    assert steps == sorted({"step-0000010", "step-0000012", best})
    assert json.loads((root / "latest.json").read_text())["dir"] == "step-0000012"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no partial leftovers


def test_kill_9_never_corrupts_latest(tiny_data: Path, llmos_home: Path, tmp_path: Path) -> None:
    values = tiny_values(tiny_data, train={"max_iters": 10_000, "log_interval": 5},
                         eval={"interval": 0, "sample_tokens": 0}, checkpoint={"interval": 1, "keep_last": 2})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(values))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    log = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen([sys.executable, "-m", "llmos.train", "pretrain", "--config", str(config),
                             "--out", str(run_dir)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 60
        while not (run_dir / "checkpoints" / "latest.json").exists():
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.time() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
        time.sleep(random.uniform(0.2, 1.0))  # checkpoints every step: the kill lands mid-anything
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    ckpt = latest_checkpoint(run_dir)
    state, trainer, info = load_checkpoint(ckpt)
    assert trainer["state"]["step"] == info["step"] >= 1 and "blocks.0.attn.qkv.weight" in state
    step = info["step"]
    resumed = pretrain(resume_config(run_dir, {"train.max_iters": str(step + 2)}), resume=str(run_dir))
    assert resumed.state.step == step + 2 and resumed.model_dir is not None


def test_bad_setups_fail_before_writing(tiny_cfg, tiny_data: Path, llmos_home: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg.data.path = None
    with pytest.raises(ConfigError, match=r"config field data\.path is missing"):
        pretrain(cfg)
    cfg = tiny_cfg(model={"block_size": 20_000})
    with pytest.raises(ConfigError, match="the val split has 10000 tokens, fewer than block_size"):
        pretrain(cfg)
    with pytest.raises(Exception, match="invalid model name"):
        pretrain(tiny_cfg(), name="Bad Name!")
    assert RunStore().list() == []


def test_runs_commands_and_tensorboard(tiny_cfg, llmos_home: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = pretrain(tiny_cfg(), out_dir=str(tmp_path / "a"))
    b = pretrain(tiny_cfg(train={"learning_rate": 1e-2}), out_dir=str(tmp_path / "b"))
    capsys.readouterr()
    assert _cli(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert a.run_id in out and b.run_id in out and "finished" in out
    assert _cli(["runs", "show", a.run_id]) == 0
    out = capsys.readouterr().out
    assert "val/loss" in out and "train/loss" in out and "batch 8" in out
    pytest.importorskip("matplotlib")
    assert _cli(["runs", "plot", a.run_id, b.run_id, "--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    pytest.importorskip("tensorboard")
    assert list((a.run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_profile_writes_a_chrome_trace(tiny_cfg, llmos_home: Path, tmp_path: Path) -> None:
    result = pretrain(tiny_cfg(train={"max_iters": 6}), out_dir=str(tmp_path / "p"), profile=2)
    trace = json.loads((result.run_dir / "profile" / "trace.json").read_text())
    assert trace["traceEvents"]


def test_ctrl_c_checkpoints_between_steps(tiny_cfg, llmos_home: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from llmos.train.batches import TokenBatches

    full = pretrain(tiny_cfg(), out_dir=str(tmp_path / "full"))
    original = TokenBatches.train_batch

    def ctrl_c_at_step_5(self, step: int, micro: int):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, step, micro)

    monkeypatch.setattr(TokenBatches, "train_batch", ctrl_c_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(), out_dir=str(tmp_path / "cut"))
    monkeypatch.setattr(TokenBatches, "train_batch", original)
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000006"  # step 5 finished, then stopped
    store = RunStore()
    assert store.find_by_dir(tmp_path / "cut").status == "interrupted"
    resumed = pretrain(resume_config(tmp_path / "cut"), resume=str(tmp_path / "cut"))
    a = [v for _, v in store.metrics(full.run_id, "train/loss")]
    b = [v for _, v in store.metrics(resumed.run_id, "train/loss")]
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-5)


def test_cli_pretrain_and_resume(tiny_data: Path, llmos_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(tiny_data)))
    assert _cli(["pretrain", "--config", str(config), "--out", str(tmp_path / "r"), "--train.max_iters", "8"]) == 0
    assert _cli(["pretrain", "--resume", "--train.max_iters", "12"]) == 0  # latest run, longer
    run = RunStore().find_by_dir(tmp_path / "r")
    assert run.status == "finished" and run.summary["steps"] == 12
    assert [s for s, _ in RunStore().metrics(run.id, "train/loss")] == list(range(12))
