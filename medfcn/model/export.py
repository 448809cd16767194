"""A model as an ONNX file: the network (batch norm folded) with its card, for runtimes other than PyTorch.

The graph is the network's, traced by PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export``, opset
:data:`OPSET`; the ``onnx`` package must be installed: ``pip install medfcn[onnx]``). What a runtime must do around
it is stated in the file's metadata (``metadata_props``), beside the model card:

- ``medfcn_card``: the card as JSON (:class:`~medfcn.model.card.ModelCard`: labels, frame, normalisation,
  slice axes, post-processing);
- ``medfcn_input``: input ``slices`` (B, K, H, W) float32, K = 2 x context + 1 neighbouring slices (replicate at the
  ends), H and W multiples of ``medfcn_stride`` (pad by edge replication, split evenly, the odd pixel after, and
  crop the output back: what :func:`medfcn.model.network.pad_to_stride` does);
- ``medfcn_output``: ``logits`` (B, C, H, W) float32, C = number of labels; softmax over C for probabilities;
- ``medfcn_normalisation``: how intensities are scaled before slicing (the card's ``normalisation``);
- ``medfcn_source_sha256``: the SHA-256 of the medfcn model file it came from.

:func:`export_onnx` checks the exported graph against PyTorch on the slices given (real ones: the CLI takes them
from a scan) with ONNX Runtime when it is installed, to :data:`TOLERANCE` in the logits.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn.errors import ModelError, UsageError

if TYPE_CHECKING:
    import torch

    from medfcn.model.card import ModelCard
    from medfcn.model.checkpoint import Model

__all__ = [
    "OPSET",
    "TOLERANCE",
    "export_onnx",
    "network_to_onnx",
    "onnx_bytes",
    "onnx_metadata",
    "check_against_torch",
    "read_card",
]

log = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = 1e-4  # largest absolute difference in the logits allowed between the exported graph and PyTorch
FORMAT = "medfcn-onnx"
_NORMALISATION = {  # medfcn.inference.frame.normalise_intensity, in words
    "percentile": "x -> (x - p0.5) / (p99.5 - p0.5) clipped to [0, 1] (percentiles of the volume on the model's frame)",
    "zscore": "x -> (x - mean) / std over the voxels above the volume's mean",
}


def onnx_metadata(model: Model) -> dict[str, str]:
    """The ``metadata_props`` written into an exported file (see the module's docstring)."""
    card = model.card
    k = int(getattr(model.network, "in_channels", 2 * int(card.context) + 1))
    stride = int(model.network.stride)
    return {
        "medfcn_format": FORMAT,
        "medfcn_card": card.to_json(),
        "medfcn_stride": str(stride),
        "medfcn_input": (
            f"slices (B, {k}, H, W) float32: {k} neighbouring slices of the normalised volume on the model's frame "
            f"(replicate-padded at the ends), H and W multiples of {stride} (edge-replicate padding split evenly, "
            "the odd pixel after; crop the output back)"
        ),
        "medfcn_output": f"logits (B, {len(card.labels)}, H, W) float32; softmax over axis 1 gives probabilities",
        "medfcn_normalisation": f"{card.normalisation}: {_NORMALISATION[str(card.normalisation)]}; then "
        f"reoriented to {card.orientation} and resampled to {' x '.join(f'{s:g}' for s in card.spacing)} mm",
        "medfcn_source_sha256": model.sha256 or "",
    }


def network_to_onnx(network: torch.nn.Module, *, opset: int = OPSET) -> bytes:
    """The serialised ONNX graph of ``network`` (batch norm folded; dynamic batch, height and width; input
    ``slices`` padded to the network's stride, output ``logits``), without medfcn's metadata.

    Raises :class:`UsageError` when the ``onnx`` package (the exporter's dependency) is missing, and
    :class:`ModelError` when the network cannot be exported.
    """
    import importlib.util

    import torch

    from medfcn.model.network import fold_batchnorm

    if importlib.util.find_spec("onnx") is None:
        raise UsageError("exporting to ONNX needs the onnx package: pip install 'medfcn[onnx]'")
    net = fold_batchnorm(network)
    stride = int(net.stride)
    dummy = torch.zeros((2, int(net.in_channels), 2 * stride, 3 * stride))
    buffer = io.BytesIO()
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes (the padding is a no-op)
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net,
                (dummy,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["slices"],
                output_names=["logits"],
                dynamic_axes={"slices": dims, "logits": dims},
            )
        except Exception as exc:  # the exporter raises many types
            raise ModelError(f"the network cannot be exported to ONNX: {str(exc).splitlines()[0]}") from None
    return buffer.getvalue()


def onnx_bytes(model: Model, *, opset: int = OPSET) -> bytes:
    """:func:`network_to_onnx` of ``model``'s network with the card and the contract in its metadata."""
    import onnx

    proto = onnx.load_from_string(network_to_onnx(model.network, opset=opset))
    proto.doc_string = f"medfcn model {model.card.name}: {model.card.description}".rstrip(": ")
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def check_against_torch(model: Model, data: bytes | str | Path, batches: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between the logits of the ONNX model ``data`` (run by ONNX Runtime) and
    of the PyTorch network for ``batches`` of slices (B, K, H, W), each padded to the stride. Raises
    :class:`ModelError` beyond :data:`TOLERANCE`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from medfcn.model.network import fold_batchnorm, pad_to_stride

    net = fold_batchnorm(model.network)
    source = data if isinstance(data, bytes) else str(data)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    worst = 0.0
    for slices in batches:
        x, _ = pad_to_stride(slices.float(), int(net.stride))
        with torch.inference_mode():
            expected = net(x).numpy()
        got = session.run(None, {"slices": np.ascontiguousarray(x.numpy())})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= TOLERANCE:
        raise ModelError(f"the exported model differs from PyTorch by {worst:.3g} in the logits (> {TOLERANCE})")
    return worst


def export_onnx(
    model: Model, path: str | Path, *, check: Sequence[torch.Tensor] | None = None, opset: int = OPSET
) -> dict:
    """Write ``model`` to ``path`` as ONNX (atomically) and return what was written: the path, opset, input and
    normalisation, and the largest difference from PyTorch on ``check`` (batches of slices (B, K, H, W)) where ONNX
    Runtime is installed (``None`` otherwise). Raises :class:`ModelError` when the check fails (nothing is written
    then)."""
    import importlib.util

    from medfcn.data.writer import atomic_write

    data = onnx_bytes(model, opset=opset)
    worst = None
    if check is not None and importlib.util.find_spec("onnxruntime") is not None:
        worst = check_against_torch(model, data, check)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    meta = onnx_metadata(model)
    return {
        "path": str(path),
        "opset": opset,
        "input": meta["medfcn_input"],
        "output": meta["medfcn_output"],
        "normalisation": meta["medfcn_normalisation"],
        "max_abs_difference": worst,
        "bytes": len(data),
    }


def read_card(path: str | Path) -> ModelCard:
    """The model card recorded in an exported ONNX file. Raises :class:`ModelError` for a file that is not one."""
    import onnx

    from medfcn.model.card import ModelCard

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX file ({str(exc).splitlines()[0]})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("medfcn_format") != FORMAT:
        raise ModelError(f"{path}: an ONNX file, but not one medfcn exported (no medfcn metadata)")
    return ModelCard.from_json(props["medfcn_card"])
