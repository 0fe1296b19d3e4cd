"""The ``asr`` command line: it parses options and calls the package, nothing more."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Train and run DeepSpeech2-style speech recognizers.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


class Decoder(str, Enum):
    greedy = "greedy"


class Format(str, Enum):
    txt = "txt"
    json = "json"


class Corpus(str, Enum):
    an4 = "an4"
    fsdd = "fsdd"


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


ModelOption = Annotated[Optional[Path], typer.Option("--model", "-m", help="Checkpoint; the bundled model if omitted.")]
DecoderOption = Annotated[Decoder, typer.Option(help="How outputs become text.")]


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files (WAV, FLAC, OGG, MP3, SPHERE, raw PCM).")],
    model: ModelOption = None,
    decoder: DecoderOption = Decoder.greedy,
    format: Annotated[Format, typer.Option("--format", "-f", help="txt: one line per file; json: one object per line.")] = Format.txt,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1; the GPU when there is one.")] = None,
) -> None:
    """Print one transcript per file; a file that cannot be read is reported and the rest go on."""
    from asr.checkpoint import load_model
    from asr.transcribe import transcribe_files

    recognizer = load_model(model, device)
    failures = 0
    for result in transcribe_files(recognizer, files):
        if result.error:
            failures += 1
            typer.echo(f"error: {result.error}", err=True)
        elif format is Format.json:
            typer.echo(json.dumps({"path": result.path, "text": result.text}))
        else:
            typer.echo(result.text if len(files) == 1 else f"{result.path}\t{result.text}")
    if failures:
        raise typer.Exit(2)


@app.command()
def evaluate(
    manifest: Annotated[Path, typer.Argument(help="JSON Lines manifest with references.")],
    model: ModelOption = None,
    decoder: DecoderOption = Decoder.greedy,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    errors: Annotated[Optional[Path], typer.Option(help="Write every utterance's reference and hypothesis here.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1; the GPU when there is one.")] = None,
) -> None:
    """Word and character error rates on a manifest."""
    from asr.checkpoint import load_model
    from asr.evaluate import evaluate_manifest, format_rates

    recognizer = load_model(model, device)
    rates = evaluate_manifest(recognizer, manifest, errors, progress=not as_json)
    typer.echo(format_rates(rates, as_json))


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config.")],
    out: Annotated[Path, typer.Option(help="Folder for checkpoints, log and plot.")] = Path("runs/latest"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1; the GPU when there is one.")] = None,
) -> None:
    """Train an acoustic model with CTC."""
    from asr.config import load_config
    from asr.train import train as run_training

    best = run_training(load_config(config), out, resume=resume, device=device)
    typer.echo(f"best checkpoint: {best}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `asr train`.")],
    out: Annotated[Path, typer.Argument(help="Where to write the inference-only model.")],
    half: Annotated[bool, typer.Option(help="Store weights in half precision.")] = True,
) -> None:
    """Strip a checkpoint to what inference needs, for shipping."""
    from asr.checkpoint import export_model

    export_model(checkpoint, out, half=half)
    typer.echo(f"{out}: {out.stat().st_size / 1e6:.1f} MB")


@app.command()
def prepare(
    corpus: Annotated[Corpus, typer.Argument(help="Which corpus layout DIR holds.")],
    directory: Annotated[Path, typer.Argument(help="The corpus folder, as it ships.")],
    out: Annotated[Path, typer.Option(help="Where manifests (and converted audio) go.")],
    dev_speakers: Annotated[Optional[int], typer.Option(help="Training speakers to hold out for dev.")] = None,
    seed: Annotated[int, typer.Option(help="Chooses the dev speakers.")] = 0,
) -> None:
    """Write train/dev(/test) manifests for a corpus."""
    from asr.corpora import CORPORA, summarize

    options = {"seed": seed} | ({"dev_speakers": dev_speakers} if dev_speakers is not None else {})
    counts = CORPORA[corpus.value](directory, out, **options)
    typer.echo(f"{out}: {summarize(counts.items())}")


def main() -> None:
    """Run the app, turning the package's input errors into one line and exit status 2."""
    from asr.errors import AsrError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app()
    except AsrError as error:
        fail(str(error))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
