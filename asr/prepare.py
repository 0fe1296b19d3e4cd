"""Preparing any corpus by name: its options checked before any work, then its preparer run."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

from asr.corpora import (CorpusError, check_holdout, check_subsets, prepare_an4, prepare_commonvoice, prepare_fsdd,
                         prepare_librispeech, prepare_ljspeech)
from asr.kaldi import check_kaldi_split, prepare_kaldi
from asr.user_folder import check_dev_share, prepare_folder


CORPORA: dict[str, Callable[..., dict[str, int]]] = {
    "an4": prepare_an4, "fsdd": prepare_fsdd, "librispeech": prepare_librispeech, "ljspeech": prepare_ljspeech,
    "commonvoice": prepare_commonvoice, "kaldi": prepare_kaldi, "folder": prepare_folder,
}


def check_options(corpus: str, root: str | Path, **options) -> None:
    """Refuse an unknown corpus, options that do not apply to it and values out of range, before
    any work (a download of gigabytes, say) is done."""
    if corpus not in CORPORA:
        raise CorpusError(f"{corpus}: unknown corpus (known: {', '.join(CORPORA)})")
    accepted = inspect.signature(CORPORA[corpus]).parameters
    for option in options:
        if option not in accepted:
            raise CorpusError(f"{corpus}: the {option.replace('_', ' ')} option does not apply")
    if (options.get("dev_speakers") or 0) < 0:
        raise CorpusError(f"cannot hold out {options['dev_speakers']} dev speakers")
    if "holdout" in options:
        check_holdout(options["holdout"])
    if "dev_share" in options:
        check_dev_share(options["dev_share"])
    if options.get("subsets") is not None:
        check_subsets(options["subsets"])
    if corpus == "kaldi":
        check_kaldi_split(root, options.get("split", "train"), options.get("dev_speakers"))


def prepare_corpus(corpus: str, root: str | Path, out: str | Path, progress: bool = False, **options) -> dict[str, int]:
    """Run ``corpus``'s preparer, refusing options that do not apply to it."""
    check_options(corpus, root, **options)
    return CORPORA[corpus](root, out, progress=progress, **options)


def summarize(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{split}: {count} utterances" for split, count in counts)
