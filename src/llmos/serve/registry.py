"""The models a server answers for: named up front or the whole library, loaded on first use.

Loaded models share a memory budget; when a new one does not fit, the least recently used idle
ones are unloaded (their engine thread stopped). A model name from a request is only ever looked
up among the configured names or parsed as a library name, never used as a filesystem path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.errors import LlmosError
from llmos.serve.errors import ModelNotFound, Overloaded, short
from llmos.serve.settings import ServeSettings

log = logging.getLogger("llmos.serve")


@dataclass
class ServedModel:
    """One loaded model: its engine (whose thread runs every forward pass) and its tokenizer."""

    name: str
    path: Path
    pretrained: Any  # llmos.checkpoint.Pretrained
    engine: Any  # llmos.engine.engine.Engine
    size_bytes: int
    created: int = field(default_factory=lambda: int(time.time()))
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0
    failed: bool = False  # set when a request saw an engine error: the engine thread is ending

    @property
    def tokenizer(self) -> Any:
        return self.pretrained.tokenizer

    @property
    def model(self) -> Any:
        return self.pretrained.model

    @property
    def context_length(self) -> int:
        return self.engine.max_len

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def alive(self) -> bool:
        # An engine whose thread died on an exception never serves again; the registry reloads it.
        # `failed` covers the moment between the error events and the thread's actual exit.
        thread = getattr(self.engine, "_thread", None)
        return not self.failed and (thread is None or thread.is_alive())

    def sampling(self, **settings: Any) -> Any:
        from llmos.engine.sampling import SamplingParams

        return SamplingParams.from_generation_config(self.pretrained.generation_config, **settings)


async def loop_run(executor: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def _retire_engine(engine: Any) -> None:
    """Stop a failed engine and fail the requests still queued on it (its thread no longer runs)."""
    engine.stop()
    fail = getattr(engine, "_fail_all", None)
    if fail is not None:
        fail("the engine stopped after an error")


def _spec_name(spec: str) -> tuple[str, str]:
    """(public name, target) for a --model value: `alias=target`, a library name, or a path."""
    from llmos.library import InvalidNameError, ModelName

    if "=" in spec:
        alias, target = spec.split("=", 1)
        return alias.strip(), target.strip()
    try:
        return str(ModelName.parse(spec)), spec
    except InvalidNameError:
        path = Path(spec)
        return (path.stem if path.suffix == ".gguf" else path.name) or spec, spec


def _disk_estimate(path: Path) -> int:
    """Bytes a model will take in memory, guessed before loading it (fp32 weights)."""
    if path.is_file():  # a GGUF file: quantized on disk, dequantized to fp32 in memory
        return path.stat().st_size * 8
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


class ModelRegistry:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.configured: dict[str, str] = dict(_spec_name(s) for s in settings.models)
        self.loaded: dict[str, ServedModel] = {}
        # Loads run one at a time on their own thread, so the event loop never waits on disk or torch.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-loader")
        self._load_lock = asyncio.Lock()
        self._sync_lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if self.configured:
            return list(self.configured)
        from llmos.library import list_models

        return [str(name) for name, _ in list_models()]

    def target(self, requested: Any) -> tuple[str, str]:
        """(public name, target) for a requested model name, or ModelNotFound."""
        from llmos.library import InvalidNameError, ModelName

        if not isinstance(requested, str) or not requested:
            raise ModelNotFound("the model field must name a served model; see GET /v1/models", param="model")
        missing = ModelNotFound(f"The model `{short(requested)}` does not exist; see GET /v1/models.",
                                param="model")
        if self.configured:
            if requested in self.configured:
                return requested, self.configured[requested]
            try:
                canonical = str(ModelName.parse(requested))
            except InvalidNameError:
                raise missing from None
            if canonical in self.configured:
                return canonical, self.configured[canonical]
            raise missing
        try:
            name = ModelName.parse(requested)
        except InvalidNameError:
            raise missing from None
        # Only a library name that exists in the store (parse() forbids any path escape).
        if not (name.path() / "config.json").is_file():
            raise missing
        return str(name), str(name)

    # -- loading -----------------------------------------------------------------------------------
    async def acquire(self, requested: Any) -> ServedModel:
        """The loaded model for a requested name (loading it, and evicting others, if needed),
        marked busy so that it cannot be evicted until `release`."""
        name, target = self.target(requested)
        served = self.loaded.get(name)
        if served is not None and served.alive:
            return self._busy(served)
        async with self._load_lock:
            served = self.loaded.get(name)
            if served is not None and not served.alive:
                log.warning("engine of %s stopped after an error; reloading it", name)
                self.loaded.pop(name, None)
                await loop_run(self._loader, _retire_engine, served.engine)
                served = None
            if served is None:
                served = await loop_run(self._loader, self._load, name, target)
            return self._busy(served)

    def _busy(self, served: ServedModel) -> ServedModel:
        with self._sync_lock:
            served.in_use += 1
            served.last_used = time.monotonic()
        return served

    def release(self, served: ServedModel) -> None:
        with self._sync_lock:
            served.in_use -= 1
            served.last_used = time.monotonic()

    def load_now(self, requested: str) -> ServedModel:
        """Load synchronously (at start-up, before the server listens)."""
        name, target = self.target(requested)
        return self.loaded.get(name) or self._load(name, target)

    def _load(self, name: str, target: str) -> ServedModel:
        from llmos.library import ModelName, resolve

        # Operator-given targets may be paths; library names from requests never are.
        path = Path(resolve(target)) if self.configured else ModelName.parse(target).path()
        self._make_room(_disk_estimate(path), name)
        t0 = time.perf_counter()
        served = self._build(name, path)
        with self._sync_lock:
            self.loaded[name] = served
        log.info("loaded %s (%.0f MB with KV cache) in %.1fs", name, served.size_bytes / 1e6,
                 time.perf_counter() - t0)
        return served

    def _build(self, name: str, path: Path) -> ServedModel:
        import torch

        from llmos.checkpoint import load_gguf, load_pretrained
        from llmos.engine.engine import Engine, start_engine

        s = self.settings
        built: dict = {}

        def build() -> Engine:
            pretrained = load_gguf(path) if path.is_file() else load_pretrained(path, dtype=torch.float32)
            if pretrained.tokenizer is None:
                raise LlmosError(f"model {name} has no tokenizer")
            built["pretrained"] = pretrained
            max_len = min(s.context_length, pretrained.model.config.block_size)
            # The server bounds the queue itself (429 before the engine's own bound is reached).
            return Engine(pretrained.model, pretrained.tokenizer, max_batch=s.max_concurrency,
                          max_queue=max(s.max_in_flight * s.max_n * 4, 256), max_len=max_len, threads=s.threads)

        # Load on the thread that will run the engine: tensor work stays on one thread.
        engine = start_engine(build)
        pretrained = built["pretrained"]
        model = pretrained.model
        max_len = engine.max_len
        c = model.config
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * max_len * s.max_concurrency * 4
        return ServedModel(name, path, pretrained, engine, weights + kv)

    def _make_room(self, needed: int, name: str) -> None:
        budget = int(self.settings.memory_budget_gb * 1e9)
        with self._sync_lock:
            used = sum(m.size_bytes for m in self.loaded.values())
            idle = sorted((m for m in self.loaded.values() if m.in_use == 0 and m.name != name),
                          key=lambda m: m.last_used)
        while used + needed > budget and idle:
            victim = idle.pop(0)
            log.info("unloading %s (least recently used) to make room for %s", victim.name, name)
            self._unload(victim)
            used -= victim.size_bytes
        if used + needed > budget and self.loaded:
            raise Overloaded(f"model {name} does not fit in the memory budget while other models are busy; "
                             "retry shortly", retry_after=5)

    def _unload(self, served: ServedModel) -> None:
        with self._sync_lock:
            self.loaded.pop(served.name, None)
        served.engine.stop()
        gc.collect()

    def close(self) -> None:
        for served in list(self.loaded.values()):
            self._unload(served)
        self._loader.shutdown(wait=False)
