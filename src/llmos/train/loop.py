"""The one training loop, used by pretraining and by every fine-tuning method.

    for step in range(start, max_iters):
        evaluate, sample and checkpoint when due
        lr = warmup + cosine schedule
        for each micro-step: loss = method.loss(model, batch) / accum; loss.backward()
        clip gradients; optimizer.step()

What trains and how a batch becomes a loss is the `method`'s business; where batches come from is
the `batches` object's (`train_batch(step, micro)` and `eval_batches(iters)`). Because a batch is
a pure function of the step and every piece of state is checkpointed (weights, optimizer, RNG),
a resumed run continues exactly where the interrupted one was.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llmos.train import checkpoints, dist
from llmos.train.config import TrainConfig
from llmos.train.method import CausalLM, move
from llmos.train.optim import build_optimizer, lr_at
from llmos.train.perf import flops_per_token, peak_flops
from llmos.train.report import Reporter


class Batches(Protocol):
    def train_batch(self, step: int, micro: int) -> Any: ...
    def eval_batches(self, iters: int) -> list[Any]: ...


@dataclass
class TrainState:
    step: int = 0  # optimizer updates done
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    tokens: int = 0  # training tokens seen, all ranks together
    train_time: float = 0.0  # seconds spent in training steps (not evaluation or checkpoints)


class Trainer:
    def __init__(self, cfg: TrainConfig, model: nn.Module, batches: Batches, *, method: CausalLM | None = None,
                 tokenizer: Any = None, run_dir: Path | None = None, reporter: Reporter | None = None,
                 dist_info: dist.DistInfo | None = None, lineage: dict[str, Any] | None = None,
                 profile_steps: int = 0) -> None:
        self.cfg, self.batches, self.tokenizer = cfg, batches, tokenizer
        self.method = method or CausalLM()
        self.info = dist_info or dist.DistInfo()
        self.run_dir, self.lineage = run_dir, lineage or {}
        self.reporter = reporter or Reporter(enabled=self.info.is_main)
        self.profile_steps = profile_steps
        self.state = TrainState()
        self.resumed_at: int | None = None
        system = cfg.system
        self.device = dist.pick_device(system.device, self.info)
        if system.threads > 0:
            torch.set_num_threads(system.threads)
        dtype = system.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"config field system.dtype must be auto, float32 or bfloat16, got {dtype!r}")
        # Weights and optimizer state stay fp32; autocast runs the matmuls in bf16 where it pays.
        self.amp_dtype = torch.bfloat16 if dtype == "bfloat16" else None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.config = model.config
        self.module = self.method.prepare(model.to(self.device))
        self.fsdp = self.info.enabled and system.distributed == "fsdp"
        if self.fsdp:  # FSDP shards the parameters in place: it must run before the optimizer sees them
            dist.wrap(self.module, self.info, "fsdp", self.device)
        self.params = self.method.trainable(self.module)
        self.optimizer = build_optimizer(self.params, cfg.train)
        self.model: nn.Module = torch.compile(self.module) if system.compile else self.module
        if not self.fsdp:
            self.model = dist.wrap(self.model, self.info, system.distributed, self.device)
        self.eval_batches = batches.eval_batches(cfg.eval.iters) if cfg.eval.iters > 0 else []
        n_params = sum(p.numel() for p in self.module.parameters())
        pos = getattr(self.module, "pos_emb", None)
        self.flops_per_token = flops_per_token(self.config, n_params - (pos.weight.numel() if pos is not None else 0))
        self.peak = peak_flops(self.device, system.peak_flops)

    # --- pieces of a step ------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """One optimizer update; returns (mean loss, grad norm, tokens) without a device sync."""
        t = self.cfg.train
        lr = lr_at(step, t, self.cfg.lr_decay_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = t.gradient_accumulation_steps
        total = torch.zeros((), device=self.device)
        tokens = 0
        for micro in range(accum):
            batch = move(self.batches.train_batch(step, micro), self.device)
            with dist.no_sync(self.model, micro < accum - 1), self.autocast():
                loss = self.method.loss(self.model, batch) / accum
            loss.backward()
            total += loss.detach()
            tokens += self.method.tokens(batch)
        norm = None
        if t.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.params], t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, norm, tokens * self.info.world_size

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches (all ranks' shares averaged)."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for batch in self.eval_batches:
            with self.autocast():
                total += self.method.loss(self.model, move(batch, self.device)).float()
        self.model.train()
        return float(dist.mean(total / max(1, len(self.eval_batches)), self.info))

    def sample(self) -> str | None:
        """A few lines of text from the model as it is now, so the user sees it learn."""
        e = self.cfg.eval
        if e.sample_tokens <= 0 or self.tokenizer is None or not (self.info.is_main or self.fsdp):
            return None
        from llmos.engine.generate import generate_tokens
        from llmos.engine.sampling import SamplingParams

        prompt = self.tokenizer.encode(e.sample_prompt, add_special_tokens=False) or [self.tokenizer.eos_id or 0]
        prompt = prompt[-(self.config.block_size // 2):]
        params = SamplingParams(max_new_tokens=min(e.sample_tokens, self.config.block_size - len(prompt)),
                                temperature=e.temperature, top_k=e.top_k, seed=self.cfg.train.seed)
        self.module.eval()
        try:
            ids = list(generate_tokens(self.module, prompt, params))
        finally:
            self.module.train()
        return self.tokenizer.decode(prompt + ids, skip_special_tokens=True)

    # --- checkpoints -------------------------------------------------------------------------------

    def _full_state(self) -> tuple[nn.Module, dict[str, Any]]:
        """A plain model holding the full weights, and the full optimizer state (gathered under FSDP)."""
        if not self.fsdp:
            return self.method.export(self.module), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        from llmos.checkpoint.folder import build_model

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.module, self.optimizer, options=opts)
        plain = build_model(self.config, model_sd) if self.info.is_main else self.module
        return plain, optim_sd

    def save(self, val_loss: float | None) -> Path | None:
        """Checkpoint at the current step (rank 0 writes; every rank takes part in the gather)."""
        if self.run_dir is None:
            return None
        model, optim_state = self._full_state()
        rngs = dist.gather(checkpoints.rng_state(), self.info)
        path = None
        if self.info.is_main:
            best = val_loss is not None and val_loss <= (self.state.best_val_loss or math.inf)
            trainer = {"optimizer": optim_state, "rng": rngs, "state": asdict(self.state)}
            info = {"val_loss": val_loss, "best_val_loss": self.state.best_val_loss,
                    "config": self.cfg.to_dict(), "run_id": self.reporter.run_id}
            c = self.cfg.checkpoint
            path = checkpoints.save_checkpoint(self.run_dir / "checkpoints", self.state.step, model, self.tokenizer,
                                               trainer, info, self.lineage, c.keep_last, best and c.keep_best)
        dist.barrier(self.info)
        return path

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint folder: weights, optimizer, RNG streams and step."""
        model_sd, trainer, _ = checkpoints.load_checkpoint(path)
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(self.module, self.optimizer, model_state_dict=model_sd,
                           optim_state_dict=trainer["optimizer"], options=StateDictOptions(full_state_dict=True))
        else:
            self.module.load_state_dict(model_sd)
            self.optimizer.load_state_dict(trainer["optimizer"])
        rngs = trainer["rng"]
        checkpoints.set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        self.state = TrainState(**trainer["state"])
        self.resumed_at = self.state.step

    # --- the loop ----------------------------------------------------------------------------------

    def _due(self, step: int, interval: int | None, start: bool) -> bool:
        if step == self.resumed_at:  # done before the checkpoint we resumed from
            return False
        if step == self.cfg.train.max_iters:
            return True
        return bool(interval) and step % interval == 0 and (step > 0 or start)

    def _eval_and_checkpoint(self, step: int) -> None:
        e, c = self.cfg.eval, self.cfg.checkpoint
        val = None
        if self.eval_batches and self._due(step, e.interval, e.at_start):
            val = self.evaluate()
            best = self.state.best_val_loss is None or val < self.state.best_val_loss
            self.state.last_val_loss = val
            if best:
                self.state.best_val_loss = val
            self.reporter.scalars([("val/loss", step, val), ("val/perplexity", step, math.exp(min(val, 50)))])
            self.reporter.message(f"step {step}: val loss {val:.4f}, perplexity {math.exp(min(val, 50)):.2f}"
                                  + (" (best)" if best else ""))
            text = self.sample()
            if text is not None:
                self.reporter.message("  | " + text.strip("\n").replace("\n", "\n  | "))
                self.reporter.text("sample", step, text)
        interval = c.interval if c.interval is not None else e.interval
        if self._due(step, interval, False) and step > 0:
            self.save(val)

    def fit(self, until: int | None = None) -> TrainState:
        """Train to max_iters (or stop early at step `until`, as an interruption would)."""
        t = self.cfg.train
        stop = t.max_iters if until is None else min(until, t.max_iters)
        pending: list[tuple[int, float, torch.Tensor, torch.Tensor | None]] = []
        window_tokens, window_time = 0, 0.0
        profiler, profiled = self._profiler(), 0
        self.module.train()
        stop_requested = self._catch_ctrl_c()
        try:
            while True:
                step = self.state.step
                self._eval_and_checkpoint(step)
                if step >= stop:
                    break
                t0 = time.perf_counter()
                lr = lr_at(step, t, self.cfg.lr_decay_iters)
                loss, norm, tokens = self.train_step(step)
                if profiler is not None:
                    profiler.step()
                    profiled += 1
                    if profiled >= self.profile_steps + 2:  # wait 1 + warmup 1 + active N
                        profiler.stop()
                        profiler = None
                self.state.step += 1
                self.state.tokens += tokens
                pending.append((step, lr, loss, norm))
                if self.state.step % t.log_interval == 0 or self.state.step == stop or stop_requested:
                    self._flush(pending)  # the one device sync per log interval
                    pending = []
                dt = time.perf_counter() - t0
                self.state.train_time += dt
                window_tokens, window_time = window_tokens + tokens, window_time + dt
                if self.state.step % t.log_interval == 0 or self.state.step == stop:
                    self._progress(window_tokens, window_time)
                    window_tokens, window_time = 0, 0.0
                if stop_requested:
                    # Between steps the state is whole, so this checkpoint resumes exactly.
                    self.reporter.message(f"interrupted at step {self.state.step}; saving a checkpoint "
                                          "(Ctrl-C again to quit at once)")
                    self.save(None)
                    raise KeyboardInterrupt
        finally:
            if profiler is not None:
                profiler.stop()
            self._restore_ctrl_c()
        return self.state

    def _catch_ctrl_c(self) -> list[bool]:
        """A single process turns the first Ctrl-C into "checkpoint after this step, then stop"; the
        flag is a list so the loop sees the handler's change. (Under torchrun, the launcher owns signals.)"""
        flag: list[bool] = []
        self._old_handler = None
        if self.info.enabled or threading.current_thread() is not threading.main_thread():
            return flag

        def handler(signum: int, frame: Any) -> None:
            flag.append(True)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        self._old_handler = signal.signal(signal.SIGINT, handler)
        return flag

    def _restore_ctrl_c(self) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
            self._old_handler = None

    def _flush(self, pending: list[tuple[int, float, torch.Tensor, torch.Tensor | None]]) -> None:
        if not pending:
            return
        losses = dist.mean(torch.stack([p[2] for p in pending]).float(), self.info).tolist()
        norms = torch.stack([p[3] for p in pending]).tolist() if pending[0][3] is not None else []
        rows = []
        for i, ((step, lr, _, _), loss) in enumerate(zip(pending, losses)):
            rows += [("train/loss", step, loss), ("train/lr", step, lr)]
            if norms:
                rows.append(("train/grad_norm", step, norms[i]))
        self.last_loss = losses[-1]
        self.reporter.scalars(rows)

    def _progress(self, tokens: int, seconds: float) -> None:
        t = self.cfg.train
        tok_s = tokens / seconds if seconds > 0 else 0.0
        flops = self.flops_per_token * tok_s
        mfu = flops / self.peak if self.peak else None
        per_step = self.state.train_time / max(1, self.state.step - (self.resumed_at or 0))
        self.reporter.progress(self.state.step, t.max_iters, self.last_loss, lr_at(self.state.step - 1, t,
                               self.cfg.lr_decay_iters), tok_s, per_step * (t.max_iters - self.state.step), mfu,
                               flops)
        self.reporter.scalars([("perf/tokens_per_s", self.state.step, tok_s), ("perf/flops", self.state.step, flops)]
                              + ([("perf/mfu", self.state.step, mfu)] if mfu is not None else []))

    # --- profiling ---------------------------------------------------------------------------------

    def _profiler(self) -> Any:
        if self.profile_steps <= 0 or not self.info.is_main or self.run_dir is None:
            return None
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        prof = profile(activities=activities, schedule=schedule(wait=1, warmup=1, active=self.profile_steps),
                       on_trace_ready=self._trace_ready, record_shapes=True)
        prof.start()
        return prof

    def _trace_ready(self, prof: Any) -> None:
        out = self.run_dir / "profile"
        out.mkdir(parents=True, exist_ok=True)
        trace = out / "trace.json"
        prof.export_chrome_trace(str(trace))
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=15)
        (out / "summary.txt").write_text(table)
        self.reporter.message(f"profiled {self.profile_steps} steps: chrome trace {trace} "
                              f"(chrome://tracing or ui.perfetto.dev); top operators in {out / 'summary.txt'}")
