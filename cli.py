"""The ``asr`` command line: it parses options and calls the package, nothing more."""

from __future__ import annotations

import importlib.util
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from asr.segment import SegmentOptions

# What the [train] extra adds to a transcription-only install (pip install asr): the commands that import them need it.
TRAINING_MODULES = ("torch", "torchaudio", "librosa", "matplotlib", "onnx")

app = typer.Typer(help="Train and run DeepSpeech2-style speech recognizers.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
lm_app = typer.Typer(help="N-gram language models for beam search.", no_args_is_help=True)
app.add_typer(lm_app, name="lm")


class DecoderKind(str, Enum):
    greedy = "greedy"
    beam = "beam"


class Format(str, Enum):
    txt = "txt"
    json = "json"
    srt = "srt"
    vtt = "vtt"


class ByteOrder(str, Enum):
    little = "little"
    big = "big"


class RawWidth(str, Enum):
    bits8 = "8"
    bits16 = "16"
    bits24 = "24"
    bits32 = "32"

    @property
    def subtype(self) -> str:
        return {"8": "PCM_S8", "16": "PCM_16", "24": "PCM_24", "32": "PCM_32"}[self.value]


class Corpus(str, Enum):
    an4 = "an4"
    fsdd = "fsdd"
    librispeech = "librispeech"
    ljspeech = "ljspeech"
    commonvoice = "commonvoice"
    kaldi = "kaldi"
    folder = "folder"


class Split(str, Enum):
    train = "train"
    dev = "dev"
    test = "test"


ModelOption = Annotated[Optional[Path], typer.Option("--model", "-m", help="Checkpoint; the bundled model if omitted.")]
RunModelOption = Annotated[Optional[Path], typer.Option(
    "--model", "-m", help="A checkpoint, or an ONNX model from `asr export`; the bundled model if omitted.")]
DeviceOption = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1; the GPU when there is one.")]
DecoderOption = Annotated[Optional[DecoderKind], typer.Option(
    "--decoder", help="greedy, or beam search; beam by default when the model has an LM or --lm is given.")]
BeamWidthOption = Annotated[int, typer.Option(help="Beams kept per frame.")]
LmOption = Annotated[Optional[Path], typer.Option("--lm", help="ARPA or binary KenLM model; the model's own if omitted.")]
AlphaOption = Annotated[Optional[float], typer.Option(help="LM weight (0 to 5); the model's tuned value if omitted.")]
BetaOption = Annotated[Optional[float], typer.Option(help="Word insertion bonus (-5 to 10); the model's tuned value if omitted.")]
UnigramsOption = Annotated[Optional[Path], typer.Option(
    "--unigrams", help="The words a binary KenLM --lm was built on: a word list, or the ARPA file it came from.")]
HotwordOption = Annotated[Optional[list[str]], typer.Option("--hotword", help="A word to favour; repeatable.")]
HotwordWeightOption = Annotated[float, typer.Option(help="How strongly hotwords are favoured.")]
PauseOption = Annotated[float, typer.Option(
    help="Seconds of pause that end a segment: shorter prints sooner, longer keeps more context together.")]
MaxSegmentOption = Annotated[float, typer.Option(help="Seconds after which a segment with no such pause is cut.")]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="txt, json (with word timings), srt or vtt.")]


def load(model: Optional[Path], device: Optional[str], decoder: Optional[DecoderKind], lm: Optional[Path],
         alpha: Optional[float], beta: Optional[float], **options):
    if model is None and importlib.util.find_spec("torch") is None:  # a transcription-only install
        from asr.onnx_model import DEFAULT_ONNX_MODEL

        model = DEFAULT_ONNX_MODEL
    if model is not None and model.suffix.lower() == ".onnx":
        from asr.onnx_model import load_onnx_model

        if device not in (None, "auto", "cpu"):
            raise typer.BadParameter(f"{device}: an ONNX model runs on the CPU", param_hint="--device")
        recognizer = load_onnx_model(model)
    else:
        from asr.recognizer import load_model

        recognizer = load_model(model, device)
    return recognizer, recognizer.decoder(decoder.value if decoder else None, lm, alpha, beta, **options)


def segment_options(pause: float, max_segment: float) -> SegmentOptions:
    """--pause and --max-segment as the segmenter's options, checked before any audio is read."""
    from asr.segment import SegmentOptions

    options = SegmentOptions(max_seconds=max_segment, min_pause=pause)
    options.validate()
    return options


def refuse_onnx(model: Optional[Path], why: str) -> None:
    if model is not None and model.suffix.lower() == ".onnx":
        raise typer.BadParameter(f"{model}: {why}", param_hint="--model")


@app.command()
def transcribe(
    inputs: Annotated[list[Path], typer.Argument(
        help="Audio files (WAV, FLAC, OGG, MP3, SPHERE, raw PCM), folders (searched recursively) or glob patterns.")],
    model: RunModelOption = None,
    decoder: DecoderOption = None,
    beam_width: BeamWidthOption = 100,
    lm: LmOption = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unigrams: UnigramsOption = None,
    hotword: HotwordOption = None,
    hotword_weight: HotwordWeightOption = 10.0,
    format: FormatOption = Format.txt,
    output_dir: Annotated[Optional[Path], typer.Option(
        help="Write one file per input here (mirroring the folders given) instead of printing.")] = None,
    skip_existing: Annotated[bool, typer.Option(
        help="Skip inputs whose output file exists already: resumes an interrupted job.")] = False,
    batch_seconds: Annotated[float, typer.Option(help="Seconds of audio the model runs on at once.")] = 60.0,
    workers: Annotated[int, typer.Option(help="Threads reading and cutting audio ahead of the model.")] = 2,
    progress: Annotated[Optional[bool], typer.Option(
        help="A progress bar and a summary line on stderr; on by default when it is a terminal.")] = None,
    raw_sample_rate: Annotated[Optional[int], typer.Option(
        help="Sample rate of .raw/.pcm files, or of headerless PCM on a pipe [default: 16000].")] = None,
    raw_byte_order: Annotated[Optional[ByteOrder], typer.Option(
        help="Byte order of raw PCM [default: little].")] = None,
    raw_width: Annotated[Optional[RawWidth], typer.Option(help="Bits per raw PCM sample [default: 16].")] = None,
    raw_channels: Annotated[Optional[int], typer.Option(help="Channels of raw PCM [default: 1].")] = None,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Print each segment as soon as it is decoded (always so for - and named pipes).")] = False,
    pause: PauseOption = 0.6,
    max_segment: MaxSegmentOption = 20.0,
    device: DeviceOption = None,
) -> None:
    """Transcribe audio of any length; a file that cannot be read is reported and the rest go on.
    - (standard input) or a named pipe is transcribed as it arrives, each segment printed as its pause ends."""
    from asr.audio import RawFormat
    from asr.stream_job import is_stream
    from asr.transcribe_job import plan_job, transcribe_job

    layout = [raw_sample_rate, raw_byte_order, raw_width, raw_channels]
    raw = RawFormat(sample_rate=raw_sample_rate or 16000, byte_order=(raw_byte_order or ByteOrder.little).value,
                    subtype=(raw_width or RawWidth.bits16).subtype, channels=raw_channels or 1)
    segmenting = segment_options(pause, max_segment)
    if stream or Path("-") in inputs or (len(inputs) == 1 and is_stream(inputs[0])):
        from asr.stream_job import check_stream_options, open_input, stream_job

        check_stream_options(inputs, output_dir, skip_existing)
        audio = open_input(inputs[0], raw if any(value is not None for value in layout) else None)
        recognizer, text_decoder = load(model, device, decoder, lm, alpha, beta, beam_width=beam_width,
                                        unigrams_file=unigrams, hotwords=hotword or [], hotword_weight=hotword_weight)
        try:
            stream_job(recognizer, text_decoder, audio, format.value, segmenting)
        finally:
            text_decoder.close()
        return
    job = plan_job(inputs, format.value, output_dir, skip_existing)
    recognizer, text_decoder = load(model, device, decoder, lm, alpha, beta, beam_width=beam_width, unigrams_file=unigrams,
                                    hotwords=hotword or [], hotword_weight=hotword_weight)
    try:
        summary = transcribe_job(recognizer, text_decoder, job, batch_seconds, raw, workers,
                                 sys.stderr.isatty() if progress is None else progress, segmenting)
    finally:
        text_decoder.close()
    if summary.failed:
        raise typer.Exit(2)


@app.command()
def listen(
    model: RunModelOption = None,
    decoder: DecoderOption = None,
    beam_width: BeamWidthOption = 100,
    lm: LmOption = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unigrams: UnigramsOption = None,
    hotword: HotwordOption = None,
    hotword_weight: HotwordWeightOption = 10.0,
    format: FormatOption = Format.txt,
    pause: PauseOption = 0.6,
    max_segment: MaxSegmentOption = 20.0,
    device: Annotated[Optional[str], typer.Option(
        help="Input device: its number or part of its name (python -m sounddevice lists them); the default one if omitted.")] = None,
) -> None:
    """Transcribe the microphone, each segment printed as its pause ends; Ctrl-C transcribes what was heard and stops."""
    from asr.stream_job import open_microphone, stream_job

    segmenting = segment_options(pause, max_segment)
    audio = open_microphone(device)
    recognizer, text_decoder = load(model, None, decoder, lm, alpha, beta, beam_width=beam_width,
                                    unigrams_file=unigrams, hotwords=hotword or [], hotword_weight=hotword_weight)
    try:
        stream_job(recognizer, text_decoder, audio, format.value, segmenting, interruptible=True)
    finally:
        text_decoder.close()


@app.command()
def evaluate(
    manifest: Annotated[Path, typer.Argument(help="JSON Lines manifest with references.")],
    model: RunModelOption = None,
    decoder: DecoderOption = None,
    beam_width: BeamWidthOption = 100,
    lm: LmOption = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unigrams: UnigramsOption = None,
    hotword: HotwordOption = None,
    hotword_weight: HotwordWeightOption = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    errors: Annotated[Optional[Path], typer.Option(help="Write every utterance's reference and hypothesis here.")] = None,
    device: DeviceOption = None,
) -> None:
    """Word and character error rates on a manifest."""
    from asr.evaluate import evaluate_manifest, format_rates

    recognizer, text_decoder = load(model, device, decoder, lm, alpha, beta, beam_width=beam_width, unigrams_file=unigrams,
                                    hotwords=hotword or [], hotword_weight=hotword_weight)
    rates = evaluate_manifest(recognizer, manifest, text_decoder, errors, progress=not as_json)
    text_decoder.close()
    typer.echo(format_rates(rates, as_json))


@app.command("tune-lm")
def tune_lm(
    manifests: Annotated[list[Path], typer.Argument(help="Dev manifests (never the test set).")],
    lm: Annotated[Path, typer.Option("--lm", help="ARPA or binary KenLM model.")],
    unigrams: UnigramsOption = None,
    model: RunModelOption = None,
    beam_width: BeamWidthOption = 50,
    alphas: Annotated[str, typer.Option(help="Comma-separated LM weights to try.")] = "0,0.25,0.5,0.75,1,1.5,2",
    betas: Annotated[str, typer.Option(help="Comma-separated insertion bonuses to try.")] = "-1,0,1,2,3",
    save: Annotated[bool, typer.Option(help="Store the LM and the best pair with the model.")] = True,
    device: DeviceOption = None,
) -> None:
    """Search the LM weight and insertion bonus on a dev manifest, print the table, and keep the best."""
    from asr.checkpoint import DEFAULT_MODEL, attach_lm
    from asr.evaluate import tune_lm_weights

    grid = [parse_floats(alphas, "--alphas"), parse_floats(betas, "--betas")]
    if save:
        refuse_onnx(model, "tune-lm stores the LM with a checkpoint: tune the .pt and export it again, or pass --no-save")
    recognizer, text_decoder = load(model, device, DecoderKind.beam, lm, None, None, beam_width=beam_width,
                                    unigrams_file=unigrams)
    results = tune_lm_weights(recognizer, manifests, text_decoder, *grid, progress=True)
    text_decoder.close()
    typer.echo(f"{'alpha':>6} {'beta':>6} {'WER':>7} {'CER':>7}")
    for alpha, beta, rates in results:
        typer.echo(f"{alpha:6.2f} {beta:6.2f} {rates.wer:7.2%} {rates.cer:7.2%}")
    alpha, beta, best = min(results, key=lambda result: (result[2].wer, result[2].cer))
    typer.echo(f"best: alpha {alpha:g}, beta {beta:g}: WER {best.wer:.2%}, CER {best.cer:.2%}")
    if save:
        attach_lm(model or DEFAULT_MODEL, lm, alpha, beta)
        typer.echo(f"saved with {model or DEFAULT_MODEL}")


def parse_floats(text: str, option: str) -> list[float]:
    from asr.errors import AsrError

    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise AsrError(f"{option} must be comma-separated numbers, not {text!r}") from None


@lm_app.command("build")
def lm_build(
    texts: Annotated[list[Path], typer.Argument(help="Plain-text files (a sentence a line) or manifests (.jsonl).")],
    out: Annotated[Path, typer.Option(help="Where to write the ARPA model.")],
    order: Annotated[int, typer.Option(help="N-gram order (2 to 6).")] = 3,
    spell: Annotated[Optional[list[Path]], typer.Option(
        help="A word list (words on each line) added spelled out letter by letter, \"smith\" as \"s m i t h\", "
             "for speech that spells words; repeatable.")] = None,
    text_weight: Annotated[int, typer.Option(
        min=1, help="Count the TEXTS' sentences this many times (the --spell lists once), to weigh "
                    "in-domain transcripts above the word lists.")] = 1,
) -> None:
    """Estimate a Kneser-Ney n-gram LM, normalising text exactly as transcripts are."""
    from itertools import chain

    from asr.lm import build_lm, corpus_lines, spelled_lines

    spell = spell or []
    used = build_lm(chain(corpus_lines(texts, text_weight), spelled_lines(spell)), order, out,
                    source=", ".join(map(str, [*texts, *spell])))
    typer.echo(f"{out}: {order}-gram model from {used} sentences")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="An audio file.")],
    out: Annotated[Path, typer.Option(help="The PNG to write.")],
    model: ModelOption = None,
    decoder: DecoderOption = None,
    lm: LmOption = None,
    unigrams: UnigramsOption = None,
    device: DeviceOption = None,
) -> None:
    """Draw the waveform, log-mel features, character posteriors and decoded words of one file."""
    from asr.inspection import inspect_audio

    refuse_onnx(model, "asr inspect draws the torch front end's features: give the checkpoint it was exported from")
    recognizer, text_decoder = load(model, device, decoder, lm, None, None, unigrams_file=unigrams)
    text = inspect_audio(recognizer, file, out, text_decoder)
    text_decoder.close()
    typer.echo(f"{out}: {text}")


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config.")],
    out: Annotated[Path, typer.Option(help="Folder for checkpoints, log and plot.")] = Path("runs/latest"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    device: DeviceOption = None,
) -> None:
    """Train an acoustic model with CTC."""
    from asr.config import load_config
    from asr.train import train as run_training

    best = run_training(load_config(config), out, resume=resume, device=device)
    typer.echo(f"best checkpoint: {best}")


@app.command()
def adapt(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests of the recordings to adapt to (asr prepare folder).")],
    out: Annotated[Path, typer.Option(help="Folder for the adapted model (OUT/model.pt).")],
    model: ModelOption = None,
    dev: Annotated[Optional[Path], typer.Option(
        help="Manifest to measure WER on before and after; a tenth of the recordings held back if omitted.")] = None,
    max_minutes: Annotated[float, typer.Option(
        min=0, help="Training time; the learning rate decays to fit in it (0: the recipe's passes, however long).")] = 15.0,
    lm_text: Annotated[Optional[list[Path]], typer.Option(
        help="Text or word list (a word a line) for the LM of your transcripts; repeatable. "
             "Default: the bundled English word list.")] = None,
    force: Annotated[bool, typer.Option(help="Replace a model already in OUT.")] = False,
    device: DeviceOption = None,
) -> None:
    """Fine-tune a model (the bundled one by default) on a speaker's own recordings."""
    from asr.adapt import Recipe, adapt as run_adaptation

    recipe = Recipe(max_minutes=max_minutes, **({"lm_texts": [str(path) for path in lm_text]} if lm_text else {}))
    result = run_adaptation(manifests, out, model, dev, recipe, force, device)
    lm = "an LM of your transcripts" if result.user_lm else "the base's LM"
    typer.echo(f"{result.model}: adapted on {result.trained_on} recordings; beam search uses {lm}")
    for name, rates in (("before", result.before), ("after", result.after)):
        if rates is not None:
            beam = f", beam WER {rates.beam.wer:.2%} CER {rates.beam.cer:.2%}" if rates.beam else ""
            typer.echo(f"{name:6}: greedy WER {rates.greedy.wer:.2%} CER {rates.greedy.cer:.2%}{beam} "
                       f"on {result.evaluated_on}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `asr train`.")],
    out: Annotated[Path, typer.Argument(
        help="Where to write the inference-only model: a .pt, or a .onnx that runs without torch.")],
    half: Annotated[bool, typer.Option(help="Store a .pt's weights in half precision.")] = True,
    int8: Annotated[bool, typer.Option(help="Store a .onnx's recurrent and output weights as 8-bit integers.")] = False,
) -> None:
    """Strip a checkpoint to what inference needs, for shipping: a .pt, or ONNX for ONNX Runtime."""
    if out.suffix.lower() == ".onnx":
        from asr.onnx_export import export_onnx

        export_onnx(checkpoint, out, int8=int8)
    else:
        if int8:
            raise typer.BadParameter("applies only to an ONNX model (OUT ending in .onnx)", param_hint="--int8")
        from asr.checkpoint import export_model

        export_model(checkpoint, out, half=half)
    typer.echo(f"{out}: {out.stat().st_size / 1e6:.1f} MB")


@app.command()
def prepare(
    corpus: Annotated[Corpus, typer.Argument(help="Which corpus layout DIR holds.")],
    directory: Annotated[Path, typer.Argument(help="The corpus folder, as it ships (or where --download puts it); "
                                                  "folder: audio files with a .txt beside each, or a metadata.csv/.tsv.")],
    out: Annotated[Path, typer.Option(help="Where manifests (and converted audio) go.")],
    download: Annotated[bool, typer.Option(
        "--download", help="First fetch the corpus into DIR (librispeech, ljspeech, an4), verify and extract it.")] = False,
    checksum: Annotated[Optional[str], typer.Option(
        help="SHA-256 or MD5 of the archive to download, where none is published (an4).")] = None,
    subset: Annotated[Optional[list[str]], typer.Option(
        "--subset", help="librispeech: a subset to prepare (and download); repeatable. Default: every subset in "
        "DIR; downloading, train-clean-100 and dev/test clean/other.")] = None,
    split: Annotated[Optional[Split], typer.Option(
        help="kaldi: which split the data directory is (default train, with dev speakers held out).")] = None,
    dev_speakers: Annotated[Optional[int], typer.Option(help="Training speakers to hold out for dev.")] = None,
    holdout: Annotated[Optional[float], typer.Option(
        help="ljspeech: share of utterances held out for dev, and again for test (default 0.05).")] = None,
    dev_share: Annotated[Optional[float], typer.Option(
        help="folder: share of the recordings drawn at random for OUT/dev.jsonl (default 0: none).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Chooses the held-out speakers or utterances.")] = None,
    run_wav_commands: Annotated[bool, typer.Option(
        "--run-wav-commands", help="kaldi: run the commands wav.scp reads audio through (flac -c -d ... |, "
        "sph2pipe ... |); they can do anything, so only for data you trust.")] = False,
) -> None:
    """Write train/dev/test manifests for a corpus (the splits it has or that can be carved)."""
    from asr.prepare import check_options, prepare_corpus, summarize

    if checksum is not None and not download:
        raise typer.BadParameter("applies only with --download", param_hint="--checksum")
    options = {"subsets": subset, "split": split.value if split else None, "dev_speakers": dev_speakers,
               "holdout": holdout, "dev_share": dev_share, "seed": seed, "run_wav_commands": run_wav_commands or None}
    options = {name: value for name, value in options.items() if value is not None}
    check_options(corpus.value, directory, **options)
    if download:
        from asr.download import download_corpus

        download_corpus(corpus.value, directory, subset, checksum, progress=True)
    counts = prepare_corpus(corpus.value, directory, out, progress=True, **options)
    typer.echo(f"{out}: {summarize(counts.items())}")


@app.command("cut-words")
def cut_words(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests of connected speech with its transcripts.")],
    out: Annotated[Path, typer.Option(help="Folder for the clips (audio/) and their manifest (words.jsonl).")],
    word: Annotated[Optional[list[str]], typer.Option(
        "--word", help="Cut only this word; repeatable. Every word if omitted.")] = None,
    model: ModelOption = None,
    device: DeviceOption = None,
) -> None:
    """Cut each word of the manifests' utterances into a clip of its own, where the model aligns it."""
    from asr.recognizer import load_model
    from asr.words import cut_words as cut

    count = cut(load_model(model, device), manifests, out, set(word) if word else None, progress=True)
    typer.echo(f"{out / 'words.jsonl'}: {count} clips")


def main() -> None:
    """Run the app, turning the package's input errors into one line and exit status 2."""
    # Typer 0.29 vendors Click; its usage errors are raised to us only outside standalone mode.
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    from asr.errors import AsrError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        status = app(standalone_mode=False)
    except NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help())
        sys.exit(0)
    except (AsrError, UsageError) as error:
        message = error.format_message() if isinstance(error, UsageError) else str(error)
        typer.echo(f"error: {message}", err=True)
        sys.exit(getattr(error, "exit_status", 2))
    except ModuleNotFoundError as error:
        if error.name not in TRAINING_MODULES:
            raise
        typer.echo(f"error: this command needs {error.name}, which a transcription-only install leaves out "
                   "(pip install 'asr[train]')", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
