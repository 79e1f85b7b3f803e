"""Continuous batching: many requests share each forward pass.

One engine thread owns the model (torch's thread pools are per calling thread, so tensor work
stays on it). Each iteration it admits queued requests into free cache rows (FIFO), runs one
chunk of prompt prefill for the oldest admitted request, then one decode step for all running
requests together, and retires those that finished. Callers get a `Request` whose events they
read as a plain iterator or an async iterator.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from llmos.engine.cache import BatchKVCache
from llmos.engine.generate import TextStream
from llmos.engine.sampling import SamplingParams, choose, process_logits
from llmos.errors import LlmosError
from llmos.model import ContextLengthError, Transformer
from llmos.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class QueueFullError(LlmosError):
    """The engine's waiting queue is at its bound; retry later."""


@dataclass
class Event:
    """One step of a request: a text delta (possibly empty) and the token behind it."""

    text: str = ""
    token_id: int | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    id: int = 0
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    _cancelled: bool = False
    _events: queue.Queue = field(default_factory=queue.Queue)
    _loop: asyncio.AbstractEventLoop | None = None
    _aevents: asyncio.Queue | None = None

    def cancel(self) -> None:
        """Stop generating at the next engine step (the request ends with finish_reason 'cancelled')."""
        self._cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _put(self, event: Event) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody listens
                self._loop.call_soon_threadsafe(self._aevents.put_nowait, event)
        else:
            self._events.put(event)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self._events.get()
            yield event
            if event.finish_reason is not None:
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._aevents.get()
            yield event
            if event.finish_reason is not None:
                return

    def text(self) -> str:
        """Block until finished; the whole generated text."""
        out = []
        for event in self:
            if event.error:
                raise LlmosError(event.error)
            out.append(event.text)
        return "".join(out)


@dataclass
class _Running:
    request: Request
    stream: TextStream
    generator: torch.Generator | None
    prefilled: int = 0
    seen: torch.Tensor | None = None  # prompt + output ids, for the repetition penalty


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, max_batch: int = 8, max_queue: int = 256,
                 max_len: int | None = None, prefill_chunk: int = 512, threads: int | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.max_len = min(max_len or model.config.block_size, model.config.block_size)
        self.threads = threads
        self.eos_ids = frozenset(tokenizer.eos_ids)
        self.cache = BatchKVCache(model.config, max_batch, self.max_len, dtype=model.tok_emb.weight.dtype)
        self._waiting: deque[Request] = deque()
        self._prefilling: _Running | None = None
        self._running: list[_Running] = []  # row i of the cache belongs to _running[i]
        self._wake = threading.Condition()
        self._ids = itertools.count(1)
        self._stop = False
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.generated_tokens = 0

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llmos-engine", daemon=True)
            self._thread.start()
            # A daemon thread still parked in torch code at interpreter exit aborts the process.
            atexit.register(self.stop)
        return self

    def _adopt_current_thread(self) -> None:
        self._thread = threading.current_thread()
        atexit.register(self.stop)

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join()
            self._thread = None
            atexit.unregister(self.stop)
        self._stop = False

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._running) + (self._prefilling is not None)

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the engine thread between steps (any other forward pass, e.g. prompt
        log-probabilities or embeddings, must not run on a second thread)."""
        future: Future = Future()
        with self._wake:
            self._calls.append((fn, future))
            self._wake.notify()
        self.start()
        return future

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               loop: asyncio.AbstractEventLoop | None = None) -> Request:
        """Queue a request; raises ContextLengthError / QueueFullError / ValueError at once."""
        if not prompt_ids:
            raise ValueError("empty prompt: at least one token is needed")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise ValueError(f"prompt token id out of vocabulary (vocab size {vocab})")
        if len(prompt_ids) >= self.max_len:
            raise ContextLengthError(
                f"prompt is too long: {len(prompt_ids)} tokens, the context length is {self.max_len}")
        request = Request(list(prompt_ids), params, id=next(self._ids))
        if loop is not None:
            request._loop, request._aevents = loop, asyncio.Queue()
        if params.max_new_tokens == 0:  # nothing to generate: done before any model work
            self._finish_request(request, "length")
            return request
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the engine queue is full ({self.max_queue} waiting requests)")
            self._waiting.append(request)
            self._wake.notify()
        self.start()
        return request

    # -- the engine thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stop and not (self._waiting or self._prefilling or self._running
                                                  or self._calls):
                        self._wake.wait()
                    if self._stop:
                        self._fail_all("engine stopped")
                        return
                try:
                    self._step()
                except Exception as e:  # fail the requests in flight, keep serving new ones
                    logger.exception("engine step failed")
                    self._fail_all(f"engine error: {type(e).__name__}", keep_waiting=True)

    def _run_calls(self) -> None:
        while self._calls:
            with self._wake:
                fn, future = self._calls.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as e:
                    future.set_exception(e)

    def _step(self) -> None:
        self._run_calls()
        self._drop_cancelled_waiting()
        if self._prefilling is None and self._waiting and len(self._running) < self.max_batch:
            with self._wake:
                request = self._waiting.popleft()
            gen = torch.Generator().manual_seed(request.params.seed) if request.params.seed is not None else None
            stream = TextStream(self.tokenizer, request.params.stop,
                                skip_ids=self.eos_ids | set(request.params.stop_token_ids))
            self._prefilling = _Running(request, stream, gen, seen=torch.tensor(request.prompt_ids))
            self.cache.reset_row(len(self._running))
        if self._prefilling is not None:
            self._prefill_chunk()
        if self._running:
            self._decode()

    def _drop_cancelled_waiting(self) -> None:
        with self._wake:
            cancelled = [r for r in self._waiting if r._cancelled]
            for r in cancelled:
                self._waiting.remove(r)
        for r in cancelled:
            self._finish_request(r, "cancelled")

    def _prefill_chunk(self) -> None:
        run = self._prefilling
        row = len(self._running)
        if run.request._cancelled:
            self._prefilling = None
            self._finish_request(run.request, "cancelled")
            return
        ids = run.request.prompt_ids[run.prefilled:run.prefilled + self.prefill_chunk]
        self.cache.bind_prefill(row, len(ids))
        logits = self.model(torch.tensor([ids]), cache=self.cache, last_only=True)[0, -1]
        run.prefilled += len(ids)
        if run.prefilled < len(run.request.prompt_ids):
            return
        self._prefilling = None
        self._running.append(run)
        if self._emit(run, logits):
            self._retire([len(self._running) - 1])

    def _decode(self) -> None:
        n = len(self._running)
        tokens = torch.tensor([[r.request.output_ids[-1]] for r in self._running])
        self.cache.bind_decode(n)
        logits = self.model(tokens, cache=self.cache)[:, -1]
        self.steps += 1
        finished = [i for i, run in enumerate(self._running) if self._emit(run, logits[i])]
        if finished:
            self._retire(finished)

    def _emit(self, run: _Running, logits: torch.Tensor) -> bool:
        """Sample the next token of `run`, send its event; True when the request is finished."""
        request, params = run.request, run.request.params
        if request._cancelled:
            request.finish_reason = "cancelled"
            request._put(Event(finish_reason="cancelled"))
            return True
        logits = logits.float()
        output = torch.tensor(request.output_ids, dtype=torch.long)
        processed = process_logits(logits, params, run.seen, output)
        token = choose(processed, params, run.generator)
        request.output_ids.append(token)
        if params.repetition_penalty != 1.0:
            run.seen = torch.cat([run.seen, torch.tensor([token])])
        self.generated_tokens += 1
        if request.first_token_at is None:
            request.first_token_at = time.perf_counter()
        event = Event(token_id=token)
        if params.logprobs is not None:
            logp = torch.log_softmax(logits, dim=-1)
            event.logprob = float(logp[token])
            if params.logprobs:
                top = torch.topk(logp, params.logprobs)
                event.top_logprobs = list(zip(top.indices.tolist(), top.values.tolist()))
        event.text = run.stream.push(token)
        stop_token = token in set(params.stop_token_ids) or (token in self.eos_ids and not params.ignore_eos)
        position = len(request.prompt_ids) + len(request.output_ids)
        if run.stream.stopped or stop_token:
            event.finish_reason = "stop"
        elif len(request.output_ids) >= params.max_new_tokens or position >= self.max_len:
            event.finish_reason = "length"
        if event.finish_reason:
            event.text += run.stream.finish()
            request.finish_reason = event.finish_reason
        request._put(event)
        return event.finish_reason is not None

    def _retire(self, rows: list[int]) -> None:
        """Remove finished rows, moving the last running rows into the gaps."""
        for row in sorted(rows, reverse=True):
            last = len(self._running) - 1
            if row != last:
                self.cache.move_row(last, row)
                self._running[row] = self._running[last]
            self._running.pop()
        if self._prefilling is not None:  # it sits right after the running rows: keep it there
            old = len(self._running) + len(rows)
            if old != len(self._running):
                self.cache.move_row(old, len(self._running))

    def _finish_request(self, request: Request, reason: str, error: str | None = None) -> None:
        request.finish_reason = reason
        request._put(Event(finish_reason=reason, error=error))

    def _fail_all(self, message: str, keep_waiting: bool = False) -> None:
        runs = [r.request for r in self._running] + ([self._prefilling.request] if self._prefilling else [])
        with self._wake:
            if not keep_waiting:
                runs += list(self._waiting)
                self._waiting.clear()
        self._running, self._prefilling = [], None
        while self._calls:
            self._calls.popleft()[1].cancel()
        for request in runs:
            if not request.done:
                self._finish_request(request, "error", message)


def start_engine(build: Callable[[], Engine]) -> Engine:
    """Run `build` (model loading, quantization: all its tensor work) on a new thread that then
    runs the engine loop. torch keeps an OpenMP thread team per calling thread; once two threads
    have run tensor work, decode-sized matmuls here ran ~1.7x slower (72 vs 41 tok/s measured),
    so the model's work stays on one thread from load to last token."""
    ready: Future = Future()

    def main() -> None:
        try:
            engine = build()
        except BaseException as e:
            ready.set_exception(e)
            return
        engine._adopt_current_thread()
        ready.set_result(engine)
        engine._loop()

    threading.Thread(target=main, name="llmos-engine", daemon=True).start()
    return ready.result()
