"""Server metrics in the Prometheus text format (GET /metrics), with no dependency.

Counters for requests (by endpoint and status) and tokens, histograms of time to first token and
request latency, and live gauges read at scrape time: requests in flight, each model's queue
depth, active sequences, and output tokens per second over the last ten seconds.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from typing import Any

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
_RATE_WINDOW = 10.0


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        for bound, count in zip(_BUCKETS, self.counts):
            le = "+Inf" if math.isinf(bound) else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {count}')
        out += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.ttft = Histogram()
        self.latency = Histogram()
        self._recent: deque[tuple[float, int]] = deque()  # (second, tokens generated in it)

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        self.latency.observe(seconds)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def token_generated(self, request: Any) -> None:
        if len(request.output_ids) == 1 and request.first_token_at is not None:
            self.ttft.observe(request.first_token_at - request.submitted)
        second = int(time.monotonic())
        if self._recent and self._recent[-1][0] == second:
            self._recent[-1] = (second, self._recent[-1][1] + 1)
        else:
            self._recent.append((second, 1))
            while self._recent and self._recent[0][0] < second - _RATE_WINDOW:
                self._recent.popleft()

    def tokens_per_second(self) -> float:
        cutoff = time.monotonic() - _RATE_WINDOW
        return sum(n for s, n in self._recent if s >= cutoff) / _RATE_WINDOW

    def render(self, models: dict[str, Any]) -> str:
        lines = ["# HELP llmos_requests_total HTTP requests answered, by endpoint and status.",
                 "# TYPE llmos_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'llmos_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += ["# TYPE llmos_prompt_tokens_total counter", f"llmos_prompt_tokens_total {self.prompt_tokens}",
                  "# TYPE llmos_completion_tokens_total counter",
                  f"llmos_completion_tokens_total {self.completion_tokens}",
                  "# TYPE llmos_requests_in_flight gauge", f"llmos_requests_in_flight {self.in_flight}",
                  "# HELP llmos_tokens_per_second Output tokens per second over the last 10 s.",
                  "# TYPE llmos_tokens_per_second gauge", f"llmos_tokens_per_second {self.tokens_per_second():.3f}"]
        lines += ["# HELP llmos_queue_depth Requests waiting in a model's engine queue.",
                  "# TYPE llmos_queue_depth gauge"]
        lines += [f'llmos_queue_depth{{model="{_label(n)}"}} {m.engine.queue_depth}' for n, m in models.items()]
        lines += ["# HELP llmos_active_sequences Sequences a model's engine is prefilling or decoding.",
                  "# TYPE llmos_active_sequences gauge"]
        lines += [f'llmos_active_sequences{{model="{_label(n)}"}} {m.engine.active}' for n, m in models.items()]
        lines += ["# HELP llmos_time_to_first_token_seconds From submission to the first output token."]
        lines += self.ttft.lines("llmos_time_to_first_token_seconds")
        lines += ["# HELP llmos_request_duration_seconds Whole request, from arrival to the last byte."]
        lines += self.latency.lines("llmos_request_duration_seconds")
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
