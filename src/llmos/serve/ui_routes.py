"""The web UI: static pages shipped in the package (no build step), and the two read-only API
endpoints they use besides /v1: GET /api/models (the library) and GET /api/runs (training runs)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse

from llmos.serve.state import server_state

log = logging.getLogger("llmos.serve")
router = APIRouter()
STATIC = Path(__file__).parent / "static"
MAX_CURVE_POINTS = 400


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(name: str, path: Path) -> dict[str, Any]:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    config = _read_json(path / "config.json") if path.is_dir() else {}
    lineage = _read_json(path / "llmos.json") if path.is_dir() else {}
    source = lineage.get("source") if isinstance(lineage.get("source"), dict) else {}
    return {
        "name": name,
        "size_bytes": sum(f.stat().st_size for f in files),
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "layers": config.get("num_hidden_layers") or config.get("n_layer"),
        "hidden_size": config.get("hidden_size") or config.get("n_embd"),
        "context_length": config.get("max_position_embeddings") or config.get("n_positions"),
        "quantization": source.get("quantization") or lineage.get("quantization") or config.get("torch_dtype"),
        "lineage": lineage,
        "evals": lineage.get("evals") or lineage.get("eval_results") or {},
    }


def library_models(registry: Any) -> dict[str, Any]:
    from llmos.library import list_models

    library = [_describe(str(name), path) for name, path in list_models()]
    served = [{"name": n, "loaded": n in registry.loaded} for n in registry.names()]
    return {"served": served, "library": library}


@router.get("/api/models")
async def api_models(request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(library_models, server_state(request).registry)


def _downsample(points: list[tuple[int, float]]) -> list[list[float]]:
    stride = max(1, len(points) // MAX_CURVE_POINTS)
    picked = points[::stride]
    if points and picked[-1] != points[-1]:
        picked.append(points[-1])
    return [[step, value] for step, value in picked]


def training_runs() -> list[dict[str, Any]]:
    """Runs from the run store, if this install has one and it holds a database; [] otherwise."""
    try:
        from llmos.train.runs import RunStore, runs_dir
    except ImportError:
        return []
    path = runs_dir() / "runs.db"
    if not path.is_file():  # opening the store would create it: a read-only page must not
        return []
    store = RunStore(path)
    try:
        out = []
        for run in store.list():
            curves = {key: _downsample(store.metrics(run.id, key)) for key in store.keys(run.id) if "loss" in key}
            out.append({"id": run.id, "name": run.name, "kind": run.kind, "status": run.status,
                        "created": run.created, "updated": run.updated, "summary": run.summary,
                        "curves": curves})
        return out
    finally:
        store.close()


@router.get("/api/runs")
async def api_runs() -> dict[str, Any]:
    try:
        runs = await asyncio.to_thread(training_runs)
    except Exception:
        log.exception("cannot read the run store")
        runs = []
    return {"runs": runs}
