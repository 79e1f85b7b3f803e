"""DDP under torchrun (2 CPU processes, gloo) trains the same model as 1 process with the same
global batch: each rank reads its own rows of the one global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from llmos.train import RunStore, pretrain
from llmos.train.config import from_dict
from tests.train.conftest import tiny_values


def test_two_process_ddp_matches_one_process(tiny_data: Path, llmos_home: Path, tmp_path: Path) -> None:
    common = {"eval": {"interval": 4, "iters": 2, "sample_tokens": 0}, "system": {"threads": 1}}
    single = pretrain(from_dict(tiny_values(tiny_data, train={"batch_size": 8}, **common)),
                      out_dir=str(tmp_path / "single"))

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_values(tiny_data, train={"batch_size": 4}, **common)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "llmos.train", "pretrain", "--config", str(config), "--out", str(tmp_path / "ddp")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stderr

    store = RunStore()
    ddp_run = store.find_by_dir(tmp_path / "ddp")
    assert ddp_run is not None and ddp_run.status == "finished"
    for key in ("train/loss", "val/loss"):
        a = torch.tensor([v for _, v in store.metrics(single.run_id, key)])
        b = torch.tensor([v for _, v in store.metrics(ddp_run.id, key)])
        assert len(a) == len(b) > 0 and torch.allclose(a, b, atol=1e-4), (key, a, b)
    wa = load_file(single.model_dir / "model.safetensors")
    wb = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    # rank 0 alone wrote: one run, one set of checkpoints
    assert len([r for r in store.list() if r.out_dir == tmp_path / "ddp"]) == 1
