"""Would reading a bidirectional layer's two directions at once, on a thread each, speed up CPU training?

    python benchmarks/rnn_directions.py [--config configs/default.yaml] [--repeats 9]

The bundled model's recurrent layers (asr.model.RecurrentLayer) run the forward and the
backward LSTM one after the other, each on all of the process's intra-op threads, and
autograd differentiates them one after the other too. Their time steps are small matrix
products, which two threads share imperfectly, so this runs the two directions at the same
time on two threads of half the cores each, forward and backward (each direction's graph is
differentiated with torch.autograd.grad on its own thread), and compares one training
step's recurrent stack, forward and backward, with the layers as they are, in turn in one
process, and the layers as they are on one thread (how well two threads share them).
Batch shapes are those of a 20-second batch after the convolutions halve the frame rate:
six 3.3-second AN4 utterances, 16 of 1.2 seconds, 40 half-second FSDD digits. Prints each
shape's medians and how they compare. Not shipped: see the README's Benchmarks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.config import load_config  # noqa: E402
from asr.model import AcousticModel, RecurrentLayer, reverse_padded  # noqa: E402
from asr.text import Vocabulary  # noqa: E402

SHAPES = [(6, 165), (16, 60), (40, 25)]  # (utterances, frames after the convolutions)


def direction_pool() -> ThreadPoolExecutor:
    """Two threads with half the process's intra-op threads each; the process keeps its own count."""
    threads = torch.get_num_threads()
    pool, barrier = ThreadPoolExecutor(2), threading.Barrier(2)

    def start() -> None:
        torch.get_num_threads()  # PyTorch sets a new thread's OpenMP count on first use: first, then ours
        torch.set_num_threads(max(1, threads // 2))
        barrier.wait()

    for future in [pool.submit(start) for _ in range(2)]:
        future.result()
    torch.set_num_threads(threads)
    return pool


class BothDirections(torch.autograd.Function):
    """Each direction recorded and differentiated on its own thread, from a detached copy of the input."""

    @staticmethod
    def forward(ctx, pool, directions, x, *parameters):
        def record(direction, input):
            with torch.enable_grad():
                return direction(input)

        inputs = [x.detach().requires_grad_() for _ in directions]
        outputs = list(pool.map(record, directions, inputs))
        ctx.pool, ctx.graphs, ctx.parameters = pool, list(zip(inputs, outputs)), parameters
        return tuple(output.detach() for output in outputs)

    @staticmethod
    def backward(ctx, *grads):
        def differentiate(graph, grad):
            input, output = graph
            return torch.autograd.grad(output, [input, *ctx.parameters], grad, allow_unused=True)

        per_direction = list(ctx.pool.map(differentiate, ctx.graphs, grads))
        summed = [sum(g for g in column if g is not None) for column in zip(*per_direction)]
        return (None, None, *summed)


def at_once(pool: ThreadPoolExecutor):
    def forward(self: RecurrentLayer, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        directions = [lambda x: self.forward_rnn(x)[0],
                      lambda x: reverse_padded(self.backward_rnn(reverse_padded(x, lengths))[0], lengths)]
        return torch.cat(BothDirections.apply(pool, directions, x, *self.parameters()), dim=-1)
    return forward


def step_seconds(layers: torch.nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor, threads: int) -> float:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    layers.zero_grad()
    start = time.perf_counter()
    out = x
    for layer in layers:
        out = layer(out, lengths)
    out.square().mean().backward()
    seconds = time.perf_counter() - start
    torch.set_num_threads(saved)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    config = load_config(args.config)
    torch.manual_seed(0)
    model = AcousticModel(config.model, config.features.n_mels, len(Vocabulary()))
    layers = model.rnns
    threads = torch.get_num_threads()
    variants = {"one after the other": (RecurrentLayer.forward, threads),
                "at once": (at_once(direction_pool()), threads),
                "one after the other on one thread": (RecurrentLayer.forward, 1)}
    print(f"{threads} threads; {len(layers)} layers of {config.model.rnn_hidden} each way")
    for batch, frames in SHAPES:
        x = torch.randn(batch, frames, model.conv.output_size, requires_grad=True)
        lengths = torch.full((batch,), frames)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            for name, (forward, step_threads) in variants.items():
                RecurrentLayer.forward = forward
                seconds = step_seconds(layers, x, lengths, step_threads)
                if repeat:
                    times[name].append(seconds)
        medians = {name: statistics.median(values) for name, values in times.items()}
        report = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in medians.items())
        as_they_are = medians["one after the other"]
        print(f"{batch} x {frames} frames: {report}; at once {as_they_are / medians['at once']:.2f}x as fast, "
              f"one thread {as_they_are / medians['one after the other on one thread']:.2f}x")


if __name__ == "__main__":
    main()
