"""The run directory every trainer writes, and checkpoint/resume.

``runs/<name>/`` holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per step),
TensorBoard events under ``tb/``, the model under ``model/``, ``provenance.json`` (inputs with
content hashes, parent runs, rater summary, code version) and ``checkpoints/step-N/`` (model,
optimizer, scheduler, RNG and data position) for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

import rlhfkit
from rlhfkit.config import config_to_dict
from rlhfkit.errors import InputError


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"rlhfkit {rlhfkit.__version__}" + (f" ({commit})" if commit else "")


def describe_input(path: str | os.PathLike) -> dict[str, Any]:
    """An input for provenance: a file with its hash, or a run/model directory as a parent."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size}
    if p.is_dir():
        run = p.parent if p.name == "model" and (p.parent / "provenance.json").exists() else p
        entry: dict[str, Any] = {"path": str(p)}
        if (run / "provenance.json").exists():
            entry["parent_run"] = str(run)
        return entry
    return {"name": str(path)}


def rater_summary(records) -> dict[str, Any]:
    """How many judgments each rater gave (None when the data names no raters)."""
    counts = Counter(getattr(r, "rater_id", None) for r in records)
    counts.pop(None, None)
    if not counts:
        return {"raters": 0}
    return {
        "raters": len(counts),
        "judgments": sum(counts.values()),
        "top_rater_share": round(max(counts.values()) / sum(counts.values()), 4),
        "per_rater": dict(counts.most_common()),
    }


class Run:
    """Writer for one run directory. Only the main process writes; others get no-ops."""

    def __init__(
        self, out: str | os.PathLike, cfg: Any, *, is_main: bool = True, resume: bool = False
    ):
        self.dir = Path(out)
        self.is_main = is_main
        self.started = time.time()
        self._tb = None
        if not is_main:
            return
        existing = (self.dir / "checkpoints").exists() or (self.dir / "metrics.jsonl").exists()
        if existing and not resume:
            raise InputError(
                f"{self.dir}: a run already exists here; pass --resume to continue it "
                "or choose another --out"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(
            self.dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
        )
        if not resume and (self.dir / "metrics.jsonl").exists():
            (self.dir / "metrics.jsonl").unlink()

    # -- metrics ---------------------------------------------------------------------------------

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.is_main:
            return
        row = {"step": step, "time": round(time.time() - self.started, 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        tb = self._writer()
        if tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    tb.add_scalar(k, v, step)

    def truncate_metrics(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the file reads as one run."""
        path = self.dir / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        rows = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
        _atomic_write(path, "".join(ln + "\n" for ln in keep))

    def _writer(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a pinned dependency; be lenient anyway
                return None
            self._tb = SummaryWriter(log_dir=str(self.dir / "tb"))
        return self._tb

    def progress(self, step: int, total: int, metrics: dict[str, float], keys=("loss",)) -> None:
        """One terminal line: step, chosen metrics, elapsed and ETA."""
        if not self.is_main:
            return
        elapsed = time.time() - self.started
        eta = elapsed / max(step, 1) * (total - step)
        shown = " ".join(f"{k}={_plain(metrics[k]):.4g}" for k in keys if k in metrics)
        print(
            f"[{self.dir.name}] step {step}/{total} {shown} "
            f"elapsed {_hms(elapsed)} eta {_hms(eta)}",
            file=sys.stderr,
            flush=True,
        )

    # -- provenance and model --------------------------------------------------------------------

    def write_provenance(self, *, kind: str, inputs: dict[str, Any], extra: dict | None = None):
        if not self.is_main:
            return
        prov = {
            "kind": kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": code_version(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "inputs": inputs,
        }
        prov.update(extra or {})
        _atomic_write(self.dir / "provenance.json", json.dumps(prov, indent=2, default=str))

    def save_model(self, model, tokenizer, extra_files: dict[str, Any] | None = None) -> Path:
        """Save a standard transformers (or PEFT) directory atomically under ``model/``."""
        target = self.dir / "model"
        if not self.is_main:
            return target
        tmp = self.dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return target

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- checkpoints -----------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoint_dir.exists():
            return None
        done = [p for p in self.checkpoint_dir.glob("step-*") if (p / "state.json").exists()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(accelerator, run: Run, step: int, state: dict[str, Any], keep: int = 2) -> None:
    """Model, optimizer, scheduler and RNG via Accelerate, plus our own ``state`` (data position).

    ``state.json`` is written last: a checkpoint without it is incomplete and ignored.
    """
    path = run.checkpoint_dir / f"step-{step}"
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        _atomic_write(path / "state.json", json.dumps({"step": step, **state}))
        done = sorted(
            (p for p in run.checkpoint_dir.glob("step-*") if (p / "state.json").exists()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, run: Run) -> dict[str, Any] | None:
    """Restore the latest complete checkpoint; returns its state (None when there is none)."""
    path = run.latest_checkpoint()
    if path is None:
        return None
    accelerator.load_state(str(path))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _plain(v):
    if isinstance(v, torch.Tensor):
        return v.item()
    return float(v) if hasattr(v, "__float__") and not isinstance(v, (int, float, bool)) else v


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
