"""Two processes under `accelerate launch` on this CPU (gloo): corpus compression writes the store one process
writes, and training follows the weights of one process with the same global batch, through a resume."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rcc(args: list[str], processes: int, config: Path | None = None) -> subprocess.CompletedProcess:
    """`rcc ARGS` as one plain process, or as `processes` launched by accelerate, with the launch flags or with an
    accelerate config file (one thread each: two processes on two cores). An FSDP config runs through
    `fsdp_on_cpu.py`, which gives the CPU processes the FSDP that accelerate keeps for GPUs."""
    flags = ["--config_file", str(config)] if config else ["--multi_gpu", "--num_machines", "1", "--mixed_precision",
                                                          "no", "--dynamo_backend", "no"]
    launch = [] if processes == 1 else ["-m", "accelerate.commands.launch", *flags, "--num_processes", str(processes),
                                        "--main_process_port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    program = [str(Path(__file__).with_name("fsdp_on_cpu.py"))] if config and "fsdp" in config.name else \
        ["-m", "rcc_model.cli"]
    done = subprocess.run([sys.executable, *launch, *program, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_compress_a_corpus_into_the_store_one_process_writes(tiny_checkpoint, corpus_dir,
                                                                           tmp_path):
    stores, reports = {}, {}
    for processes in (1, 2):
        stores[processes] = tmp_path / f"p{processes}.rccstore"
        reports[processes] = _rcc(["compress", str(corpus_dir), "-o", str(stores[processes]), "--model",
                                   tiny_checkpoint, "--shard-size", "0.005"], processes).stdout
    assert reports[2].count("6 documents (6 compressed now") == 1  # the main process reports the store
    shares = dict(re.findall(r"process (\d)/2: (\d) documents", reports[2]))
    assert sorted(shares) == ["1", "2"] and sum(map(int, shares.values())) == 6 and "0" not in shares.values()
    one, two = (json.loads((stores[p] / "manifest.json").read_text()) for p in (1, 2))
    assert one == two and len(one["documents"]) == 6
    shards = sorted(p.name for p in (stores[1] / "shards").glob("shard-*"))
    assert len(shards) > 2 and shards == sorted(p.name for p in (stores[2] / "shards").glob("shard-*"))
    for name in shards:  # the same slots, byte for byte
        assert (stores[1] / "shards" / name).read_bytes() == (stores[2] / "shards" / name).read_bytes()


@pytest.mark.parametrize("launch,distributed", [("ddp.yaml", "MULTI_CPU"), ("fsdp.yaml", "FSDP")])
def test_two_processes_train_checkpoint_and_resume_to_the_weights_of_one_process_with_the_same_global_batch(
        launch, distributed, run_config, tmp_path):
    config = json.loads(run_config.read_text())
    # equal target lengths in every example: the mean of two processes' losses is then the global batch's loss
    config.update(objectives={"reconstruction": 1}, whole_window_share=0)
    for name, batch_size in (("one", 4), ("two", 2)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**config, "out": name, "batch_size": batch_size}))
    _rcc(["train", str(tmp_path / "one.json")], 1)
    shipped = ROOT / "configs" / "accelerate" / launch  # the shipped launch config, with 2 processes on this CPU
    _rcc(["train", str(tmp_path / "two.json"), "--stop-at", "3"], 2, shipped)
    assert json.loads((tmp_path / "two" / "state" / "state.json").read_text())["step"] == 3
    _rcc(["train", str(tmp_path / "two.json")], 2, shipped)

    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    starts = [r for r in log if r["event"] == "start"]
    assert [(r["step"], r["processes"], r["distributed"]) for r in starts] == [(0, 2, distributed), (3, 2, distributed)]
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert len(losses) == config["steps"] and all(torch.isfinite(torch.tensor(losses)))
    a = load_file(str(tmp_path / "one" / "state" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "state" / "weights.safetensors"))
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    assert any(b[k].abs().sum() > 0 for k in b if "lora_B" in k)  # LoRA's B starts at zero: it trained
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert (tmp_path / "two" / "final" / "rcc_config.json").is_file()
