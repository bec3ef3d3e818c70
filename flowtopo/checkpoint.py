"""Checkpoint directories: ``model.pt`` (state_dict), ``config.json``, ``standardizer.json``.

Loading rebuilds the model from the config and reads weights with ``torch.load(weights_only=True)``:
no pickled objects are ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowtopo.data import Standardizer
from flowtopo.errors import InputError
from flowtopo.model import FlowAE

MODEL_FILE, CONFIG_FILE, STD_FILE = "model.pt", "config.json", "standardizer.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its standardiser and the full run config."""

    model: FlowAE
    standardizer: Standardizer
    config: dict[str, Any]


def save_checkpoint(path: str | Path, model: FlowAE, standardizer: Standardizer,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint directory ``path`` and return it.

    ``extra`` (the dataset spec, training config, metrics...) is stored in config.json beside
    the model config.
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), p / MODEL_FILE)
    cfg = {"model": model.config(), **(extra or {})}
    (p / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, default=str))
    (p / STD_FILE).write_text(json.dumps(standardizer.to_dict()))
    return p


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint directory written by `save_checkpoint`.

    Raises:
        InputError: missing files, or a weights file that is not a plain state_dict
            (``weights_only=True`` refuses pickled objects).

    """
    p = Path(path)
    for f in (MODEL_FILE, CONFIG_FILE, STD_FILE):
        if not (p / f).is_file():
            raise InputError(f"{p}: not a flowtopo checkpoint (missing {f})")
    try:
        cfg = json.loads((p / CONFIG_FILE).read_text())
        std = Standardizer.from_dict(json.loads((p / STD_FILE).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{p}: unreadable checkpoint config ({err})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise InputError(f"{p / CONFIG_FILE}: no 'model' section")
    model = FlowAE.from_config(cfg["model"])
    try:
        state = torch.load(p / MODEL_FILE, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError/EOFError
        first = (str(err).splitlines() or [""])[0]
        raise InputError(f"{p / MODEL_FILE}: refused to load ({type(err).__name__}: "
                         f"{first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InputError(f"{p / MODEL_FILE}: not a state_dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing/unexpected keys, shape mismatches
        first = " ".join(str(err).split())[:300]
        raise InputError(f"{p}: the weights do not fit the model its config describes "
                         f"({first})") from None
    return Checkpoint(model.eval(), std, cfg)
