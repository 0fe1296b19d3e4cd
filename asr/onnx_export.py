"""Writing a checkpoint as an ONNX model that ``asr.onnx_model`` runs without torch.

The graph is the acoustic model alone (convolutions, recurrent stack, output layer), with dynamic
batch and time axes; the front end stays out, computed in numpy at run time. Everything else a
recognizer needs travels in the model's metadata, so the file alone is one, as ``model.pt`` is.

Exported with torch's TorchScript exporter (``dynamo=False``): it traces the padded-batch LSTMs
and the per-utterance reversal into plain ONNX LSTM and Gather nodes and keeps ``dynamic_axes``;
the torch.export-based exporter (the default since torch 2.9) needs onnxscript, and its support
for ``dynamic_axes`` is incomplete (torch's documentation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from asr.checkpoint import copy_lm_beside, load_checkpoint
from asr.files import move_into_place
from asr.onnx_model import FORMAT, INPUTS, OUTPUTS
from asr.recognizer import build_recognizer, checkpoint_configs

OPSET = 17
INT8_OPERATORS = ["LSTM", "MatMul", "Gemm"]
EXAMPLE_FRAMES = (400, 250)  # an example batch of two utterances of different lengths, for the trace


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, int8: bool = False) -> None:
    """Write ``checkpoint``'s acoustic model to ``out`` as ONNX, with its configs, vocabulary and LM settings
    as metadata; a stored LM is copied beside it, as ``asr export`` does for a .pt.

    ``int8`` stores the recurrent layers' and the output layer's weights as 8-bit integers (ONNX Runtime's
    dynamic quantization: activations quantized as they come). The convolutions stay in float: on the
    bundled model quantizing them too cost 0.6 points of greedy WER on AN4 dev; these layers cost none
    greedy and 0.19 points with beam search and the LM (one word in 514).
    """
    import onnx  # an export-time dependency only: the runtime reads metadata through onnxruntime

    checkpoint, out = Path(checkpoint), Path(out)
    state = load_checkpoint(checkpoint)
    features, model_config, vocabulary = checkpoint_configs(state, str(checkpoint))
    model = build_recognizer(state, torch.device("cpu"), str(checkpoint)).model
    example = (torch.randn(len(EXAMPLE_FRAMES), max(EXAMPLE_FRAMES), features.n_mels), torch.tensor(EXAMPLE_FRAMES))
    metadata = {"format": FORMAT, "feature_config": json.dumps(dataclasses.asdict(features)),
                "model_config": json.dumps(dataclasses.asdict(model_config)), "vocabulary": json.dumps(vocabulary.tokens)}
    if "decoder" in state:
        lm_name = copy_lm_beside(checkpoint.parent / state["decoder"]["lm"], out)
        metadata["decoder"] = json.dumps({**state["decoder"], "lm": lm_name})
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as temporary:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's advice on batch_first LSTMs is not the user's concern
            torch.onnx.export(model, example, temporary.name, dynamo=False, opset_version=OPSET,
                              input_names=list(INPUTS), output_names=list(OUTPUTS),
                              dynamic_axes={"features": {0: "batch", 1: "frames"}, "feature_lengths": {0: "batch"},
                                            "log_probs": {0: "batch", 1: "output_frames"}, "lengths": {0: "batch"}})
        graph = onnx.load(temporary.name)
        onnx.helper.set_model_props(graph, metadata)
        onnx.save(graph, temporary.name)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.disable(logging.WARNING)  # its root-logger lines: each tensor left in float, advice on pre-processing
            try:
                quantize_dynamic(temporary.name, temporary.name, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=INT8_OPERATORS)  # keeps the metadata
            finally:
                logging.disable(logging.NOTSET)
        move_into_place(temporary.name, out)
    finally:
        Path(temporary.name).unlink(missing_ok=True)
