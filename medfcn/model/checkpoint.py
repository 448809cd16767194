"""Model files: weights in safetensors, everything needed to use them as JSON metadata in the same file.

A medfcn model file is a safetensors file (tensors only, no code: loading one never executes anything) whose
metadata holds ``{"format": "medfcn", "format_version": "1", "card": <ModelCard as JSON>}``. The card records
the architecture and its constructor arguments (so the network is rebuilt with no guessing), label names and
ids, modality, intensity normalisation, orientation, target spacing, slice axes, post-processing, how it was
trained (command, data and its hash) and its validation metrics.

>>> from medfcn.model.network import FCN
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
>>> net = FCN(in_channels=3, num_classes=2)
>>> written = save_model(path, net, ModelCard(network=net.config.to_dict()))
>>> load_model(path).card.labels
{'background': 0, 'brain': 1}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfcn import __version__
from medfcn.data.writer import atomic_write, file_sha256
from medfcn.dicom.codes import code_for
from medfcn.errors import ModelError
from medfcn.model.card import FORMAT_VERSION, Architecture, ModelCard
from medfcn.model.network import FCN

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DEFAULT_MODEL_PATH",
    "Architecture",
    "ModelCard",
    "Model",
    "build_from_card",
    "save_model",
    "load_model",
    "replace_card",
    "describe",
    "file_sha256",
]

FORMAT = "medfcn"
# medfcn/models/: where users and scripts have always found the bundled file (kept there across the layout change)
DEFAULT_MODEL_PATH = Path(__file__).parents[1] / "models" / "default.safetensors"


@dataclass
class Model:
    """A network in eval mode with its card and where it came from."""

    network: nn.Module
    card: ModelCard
    path: Path | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.card.name

    def summary(self) -> dict[str, Any]:
        """A short JSON-able description (for manifests and reports)."""
        return {
            "name": self.card.name,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "architecture": self.card.architecture,
            "variant": self.card.network.get("variant"),
            "labels": self.card.labels,
            "spacing": list(self.card.spacing),
        }


def build_from_card(card: ModelCard) -> nn.Module:
    """An untrained network of the card's architecture and constructor arguments."""
    arch = Architecture(card.architecture)
    try:
        if arch is Architecture.FCN:
            return FCN(dict(card.network))
        from medfcn.model.baselines import BasicUNet2D

        return BasicUNet2D(**card.network)
    except TypeError as exc:
        raise ModelError(f"model network settings do not fit the {arch.value} architecture: {exc}") from None


def _check_weights(path: Path, card: ModelCard, tensors: dict[str, torch.Tensor]) -> None:
    """The card's network, built on the meta device (no memory), has exactly the file's tensor shapes."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_from_card(card).state_dict().items()}
    except ModelError as exc:
        raise ModelError(f"{path}: unusable model card: {exc}") from None
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        diff = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if expected[k] != got[k])
        k = diff[0]
        raise ModelError(
            f"{path}: weights do not fit the network its card describes ({len(diff)} tensors differ; "
            f"first {k}: file {got.get(k, 'missing')}, card {expected.get(k, 'missing')})"
        )


def save_model(path: str | Path, network: nn.Module, card: ModelCard) -> Path:
    """Write ``network``'s weights and ``card`` to ``path`` (safetensors) through
    :func:`medfcn.data.writer.atomic_write` (a killed save leaves the previous file and a temporary
    :func:`~medfcn.data.writer.remove_stale_partials` knows).
    Returns the path; raises :class:`OutputError` when it cannot be written."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "card": card.to_json()}

    def write(tmp: Path) -> None:
        save_file(state, str(tmp), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files readable by their owner only

    return atomic_write(path, write)


def replace_card(path: str | Path, card: ModelCard, out: str | Path | None = None) -> Path:
    """Write the model file ``path`` again (to ``out``, default ``path``) with a new ``card`` and the same tensors,
    bit for bit (they are copied from the file, never through a network). The card is validated against the
    weights first. Returns the path written; raises :class:`ModelError` or :class:`OutputError`."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors, meta = _read(path)
    card = ModelCard.from_json(card.to_json())
    _check_weights(path, card, tensors)
    meta = {**meta, "card": card.to_json()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        written, _ = _read(tmp)
        if written.keys() != tensors.keys() or any(
            not torch.equal(written[k].reshape(-1).view(torch.uint8), tensors[k].reshape(-1).view(torch.uint8))
            for k in tensors
        ):
            raise ModelError(f"{path}: the weights did not survive rewriting the card")

    return atomic_write(Path(out or path), write)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: not a medfcn model file (medfcn reads only safetensors files it wrote; "
            f"pickled checkpoints are refused because loading them can run code): {str(exc).splitlines()[0]}"
        ) from None
    return tensors, meta


def load_model(path: str | Path | None = None) -> Model:
    """The model in ``path`` (``None``: the bundled brain-extraction model), in eval mode on the CPU.

    Raises :class:`ModelError` for a missing file, a file that is not a medfcn model (a pickle included: it is
    never unpickled), an unknown format version, or weights that do not fit the recorded architecture.
    """
    path = Path(DEFAULT_MODEL_PATH if path is None else path).expanduser()
    if not path.is_file():
        hint = " (the bundled model is missing: reinstall medfcn)" if path == DEFAULT_MODEL_PATH else ""
        raise ModelError(f"model file {path} does not exist{hint}")
    tensors, meta = _read(path)
    if meta.get("format") != FORMAT or "card" not in meta:
        raise ModelError(f"{path}: a safetensors file, but not a medfcn model (no medfcn metadata)")
    version = meta.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise ModelError(
            f"{path}: medfcn model format version {version}; this medfcn ({__version__}) reads version "
            f"{FORMAT_VERSION}: upgrade medfcn"
        )
    try:
        card = ModelCard.from_json(meta["card"])
    except ModelError as exc:
        raise ModelError(f"{path}: unusable model card: {exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: damaged model card: {exc}") from None
    except RecursionError:  # JSON nested deeper than Python's parser recurses: no card is
        raise ModelError(f"{path}: damaged model card: nested too deeply to be a model card") from None
    _check_weights(path, card, tensors)
    network = build_from_card(card)
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the recorded network: {str(exc).splitlines()[0]}") from None
    return Model(network=network.eval(), card=card, path=path, sha256=file_sha256(path))


def describe(model: Model) -> str:
    """A readable multi-line description of a model (what ``medfcn info`` prints)."""
    c = model.card
    n_params = sum(p.numel() for p in model.network.parameters())
    lines = [
        f"model        {c.name}" + (f"  ({model.path})" if model.path else ""),
        f"description  {c.description}" if c.description else None,
        f"format       medfcn v{c.format_version}, written by medfcn {c.medfcn_version}",
        f"architecture {c.architecture} {json.dumps(c.network, sort_keys=True)}",
        f"parameters   {n_params:,}",
        "labels       " + ", ".join(f"{k}={v}" for k, v in sorted(c.labels.items(), key=lambda kv: kv[1])),
        *(
            f"code         {name}: {' / '.join(f'{m} ({s} {v})' for v, s, m in code_for(name, c.label_codes).values())}"
            + ("" if name in c.label_codes else " [default table]")
            for name, i in sorted(c.labels.items(), key=lambda kv: kv[1])
            if i > 0
        ),
        f"modality     {c.modality}",
        f"frame        {c.orientation}, {' x '.join(f'{s:g}' for s in c.spacing)} mm, "
        f"slices along axes {list(c.slice_axes)} with {c.context} neighbour(s) each side",
        f"intensity    {c.normalisation}",
        f"postprocess  {', '.join(c.postprocess) or 'none'}",
        f"weights      {', '.join(f'{w:g}' for w in c.class_weights)} (decision prior per label, calibrated)"
        if c.class_weights
        else None,
    ]
    for key in ("command", "data", "data_sha256", "seed", "steps", "minutes", "device"):
        if key in c.training:
            lines.append(f"training     {key}: {c.training[key]}")
    if isinstance(c.training.get("init"), dict):  # fine-tuned (medfcn train --init): the model it started from
        init = c.training["init"]
        lines.append(f"training     started from {init.get('path')} (sha256 {init.get('sha256')})")
    if "ignore_label" in c.training:
        lines.append(f"training     ignore label (not annotated): {c.training['ignore_label']}")
    if "calibration" in c.training:
        cal = c.training["calibration"]
        cases = ", ".join(str(d.get("case")) for d in cal.get("data", []))
        lines.append(
            f"calibration  threshold {cal.get('threshold')} on {cases}: Dice {cal.get('dice_at_0.5')} -> "
            f"{cal.get('dice')}"
        )
    for key, value in sorted(c.metrics.items()):
        lines.append(f"metric       {key}: {value}")
    if model.sha256:
        lines.append(f"sha256       {model.sha256}")
    return "\n".join(line for line in lines if line is not None)
