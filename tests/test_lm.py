"""N-gram language models: estimating one (kaldingram), reading corpora, checking one before decoding."""

from __future__ import annotations

import shutil
from itertools import chain

import kenlm
import pytest
import torch

from asr.checkpoint import model_state, save_checkpoint
from asr.data import Utterance, write_manifest
from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.lm import build_lm, corpus_lines, spelled_lines
from asr.lm_check import KENLM_BINARY_MAGIC, LanguageModelError, check_lm
from asr.model import AcousticModel, ModelConfig
from asr.text import Vocabulary
from helpers import SAMPLES, assert_one_line_error, run_cli

VOCABULARY = Vocabulary()
SENTENCES = [
    "Hello, World!",
    "The cat sat.",
    "THE CAT RAN",
    "I have 2 cats",  # a digit: skipped whole, so "i", "have" and "cats" never become words
    "   ",  # nothing left after normalising: not a sentence
    "Don't stop-now",  # apostrophe kept, hyphen a word break
]
USED_WORDS = {"hello", "world", "the", "cat", "sat", "ran", "don't", "stop", "now"}


def unigrams(path) -> set[str]:
    """Words of an ARPA file's 1-gram section, read independently of asr.lm."""
    words, section = set(), None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("\\"):
            section = line.strip()
        elif section == "\\1-grams:" and line.strip():
            words.add(line.split()[1])
    return words - {"<s>", "</s>", "<unk>"}


def write_unigram_arpa(path, words: list[str]) -> None:
    """A well-formed order-1 ARPA file: check_lm accepts it, KenLM cannot load it."""
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:", "-99.0\t<s>", "-1.0\t</s>"]
    lines += [f"-1.0\t{word}" for word in words]
    path.write_text("\n".join([*lines, "", "\\end\\", ""]), encoding="utf-8")


def write_arpa(path, words: list[str]) -> None:
    """A well-formed bigram ARPA file over ``words`` (for alphabets build_lm would never produce)."""
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "ngram 2=1", "", "\\1-grams:",
             "-99.0\t<s>\t-0.3", "-1.0\t</s>"]
    lines += [f"-1.0\t{word}\t-0.3" for word in words]
    lines += ["", "\\2-grams:", f"-0.5\t<s> {words[0]}", "", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------- build_lm


def test_build_lm_writes_an_arpa_that_kenlm_loads(tmp_path):
    out = tmp_path / "nested" / "lm.arpa"  # the folder is created
    used = build_lm(SENTENCES, 3, out, progress=False)
    assert used == 4
    assert out.read_text(encoding="utf-8").startswith("\\data\\\n")
    assert not [p.name for p in out.parent.iterdir() if p.name != "lm.arpa"], "temporary file left behind"
    model = kenlm.Model(str(out))
    assert model.order == 3
    assert unigrams(out) == USED_WORDS
    for word in USED_WORDS:
        assert word in model, word
    for word in ("Hello", "hello,", "world!", "i", "have", "cats", "2", "stop-now"):
        assert word not in model, word
    # The model has learned what it was given: a seen sentence beats the same words shuffled.
    assert model.score("the cat sat") > model.score("sat cat the")


def test_build_lm_result_passes_check_lm(tmp_path):
    out = tmp_path / "lm.arpa"
    build_lm(SENTENCES, 3, out, progress=False)
    words = check_lm(out, VOCABULARY)
    assert set(words) - {"<s>", "</s>", "<unk>"} == USED_WORDS


@pytest.mark.parametrize("order", [2, 3, 4, 5, 6])
def test_orders_2_to_6_give_models_kenlm_loads(tmp_path, order):
    out = tmp_path / f"lm{order}.arpa"
    assert build_lm(SENTENCES, order, out, progress=False) == 4
    assert f"ngram {order}=" in out.read_text()
    assert unigrams(out) == USED_WORDS
    assert kenlm.Model(str(out)).order == order


def test_order_1_is_either_refused_or_usable(tmp_path):
    """KenLM refuses unigram models ("This ngram implementation assumes at least a bigram model"),
    so an order-1 model is useless to the beam decoder: build_lm must refuse order 1 or write one KenLM loads."""
    out = tmp_path / "lm1.arpa"
    try:
        build_lm(SENTENCES, 1, out, progress=False)
    except LanguageModelError as error:
        assert "order" in str(error)
        return
    assert kenlm.Model(str(out)).order >= 1


@pytest.mark.parametrize("order", [0, 7, -1])
def test_orders_outside_2_to_6_are_refused(tmp_path, order):
    with pytest.raises(LanguageModelError, match=f"order must be 2 to 6, not {order}"):
        build_lm(SENTENCES, order, tmp_path / "lm.arpa", progress=False)
    assert not (tmp_path / "lm.arpa").exists()


@pytest.mark.parametrize("sentences", [[], ["", "  ", "..."], ["42", "route 66", "Привет мир"]],
                         ids=["no-lines", "blank-lines", "unspellable"])
def test_a_corpus_without_usable_sentences_names_its_source(tmp_path, sentences):
    with pytest.raises(LanguageModelError) as error:
        build_lm(sentences, 3, tmp_path / "lm.arpa", progress=False, source="my-corpus.txt")
    assert str(error.value).startswith("my-corpus.txt: "), str(error.value)
    assert isinstance(error.value, AsrError)
    assert not (tmp_path / "lm.arpa").exists()


def test_build_lm_uses_the_given_vocabulary(tmp_path):
    """Sentences are checked against the model's own alphabet, not the default one."""
    digits = Vocabulary(["_", " ", *"0123456789"])
    assert build_lm(["1 2 3", "4 5", "hello"], 2, tmp_path / "lm.arpa", vocabulary=digits, progress=False) == 2
    assert unigrams(tmp_path / "lm.arpa") == {"1", "2", "3", "4", "5"}


# ---------------------------------------------------------------- corpus_lines


def test_corpus_lines_reads_text_files_and_manifests(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("first line\nSecond, line!\n\nthird\n", encoding="utf-8")
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [Utterance(tmp_path / "a.wav", 1.0, "yes"), Utterance(tmp_path / "b.wav", 2.0, "no go")])
    lines = [line.rstrip("\n") for line in corpus_lines([text, manifest])]
    assert lines == ["first line", "Second, line!", "", "third", "yes", "no go"]
    used = build_lm(corpus_lines([text, manifest]), 2, tmp_path / "lm.arpa", progress=False)
    assert used == 5
    assert unigrams(tmp_path / "lm.arpa") == {"first", "line", "second", "third", "yes", "no", "go"}


def test_corpus_lines_of_a_missing_or_binary_text_file(tmp_path):
    with pytest.raises(LanguageModelError, match=f"{tmp_path / 'missing.txt'}: no such text file"):
        list(corpus_lines([tmp_path / "missing.txt"]))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    with pytest.raises(LanguageModelError, match=f"{binary}: not UTF-8 text"):
        list(corpus_lines([binary]))


def test_corpus_lines_of_a_missing_manifest_names_it(tmp_path):
    with pytest.raises(AsrError, match="missing.jsonl"):
        list(corpus_lines([tmp_path / "missing.jsonl"]))


def test_spelled_lines_spell_each_word_of_a_word_list(tmp_path):
    words = tmp_path / "names.txt"
    words.write_text("Smith\nMcKee jones\nO'Brien\n\nAl\n", encoding="utf-8")
    assert list(spelled_lines([words])) == ["s m i t h", "m c k e e", "j o n e s", "a l"]
    with pytest.raises(LanguageModelError, match="missing.txt: no such text file"):
        spelled_lines([tmp_path / "missing.txt"])  # checked before the first word is read


def test_spelled_words_teach_the_lm_their_letter_sequences(tmp_path):
    """A spelled name the transcripts never contain becomes likelier than its E-set confusion once the
    LM has seen similar names spelled ("williams" as heard "t i l l i a n s" by an acoustic model)."""
    transcripts = tmp_path / "transcripts.txt"
    transcripts.write_text("enter five\nj o h n\nrubout two\n" + " ".join("abcdefghijklmnopqrstuvwxyz") + "\n",
                           encoding="utf-8")
    names = tmp_path / "names.txt"
    names.write_text("williams\nwilliamson\nwilkins\nadams\nwilliam\n", encoding="utf-8")
    plain, spelled = tmp_path / "plain.arpa", tmp_path / "spelled.arpa"
    build_lm(corpus_lines([transcripts]), 5, plain, progress=False)
    build_lm(chain(corpus_lines([transcripts]), spelled_lines([names])), 5, spelled, progress=False)
    plain_lm, spelled_lm = kenlm.Model(str(plain)), kenlm.Model(str(spelled))
    assert abs(plain_lm.score("w i l l i a m s") - plain_lm.score("t i l l i a n s")) < 1
    assert spelled_lm.score("w i l l i a m s") > spelled_lm.score("t i l l i a n s") + 2  # log10: 100 times likelier
    assert unigrams(spelled) == {"enter", "five", "rubout", "two", *"abcdefghijklmnopqrstuvwxyz"}


# ---------------------------------------------------------------- check_lm


def test_check_lm_of_a_missing_file(tmp_path):
    with pytest.raises(LanguageModelError, match=f"^{tmp_path / 'lm.arpa'}: no such language model file$"):
        check_lm(tmp_path / "lm.arpa", VOCABULARY)
    (tmp_path / "folder.arpa").mkdir()
    with pytest.raises(LanguageModelError, match="folder.arpa: no such language model file"):
        check_lm(tmp_path / "folder.arpa", VOCABULARY)


@pytest.mark.parametrize("content", [
    b"the cat sat\nthe cat ran\n",
    b"",
    b"\n\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
    b"ngram 1=3\n\\1-grams:\n-1.0\tcat\n",  # no \data\ header
], ids=["text", "empty", "blank-lines", "binary-junk", "headerless"])
def test_check_lm_of_a_file_that_is_not_a_language_model(tmp_path, content):
    path = tmp_path / "lm.arpa"
    path.write_bytes(content)
    with pytest.raises(LanguageModelError) as error:
        check_lm(path, VOCABULARY)
    assert str(error.value) == f"{path}: not an ARPA or binary KenLM language model"


@pytest.mark.skipif(shutil.which("build_binary") is None, reason="KenLM's build_binary is not installed")
def test_check_lm_accepts_a_binary_kenlm_model(tmp_path):
    import subprocess

    arpa, binary = tmp_path / "lm.arpa", tmp_path / "lm.bin"
    build_lm(SENTENCES, 3, arpa, progress=False)
    subprocess.run(["build_binary", str(arpa), str(binary)], check=True, capture_output=True)
    assert check_lm(binary, VOCABULARY) is None
    assert kenlm.Model(str(binary)).order == 3


def test_check_lm_recognises_the_binary_kenlm_header(tmp_path):
    """Without build_binary at hand: a file with KenLM's binary magic is taken as binary (unigrams unknown)."""
    path = tmp_path / "lm.bin"
    path.write_bytes(KENLM_BINARY_MAGIC + b" \x00\x01\x02 whatever follows")
    assert check_lm(path, VOCABULARY) is None


def test_a_binary_model_takes_its_words_from_a_word_list_or_its_arpa(tmp_path):
    binary = tmp_path / "lm.bin"
    binary.write_bytes(KENLM_BINARY_MAGIC + b" \x00\x01\x02 whatever follows")
    words = tmp_path / "words.txt"
    words.write_text("the cat\nsat\n  ran don't\n")
    assert check_lm(binary, VOCABULARY, words) == ["the", "cat", "sat", "ran", "don't"]
    arpa = tmp_path / "lm.arpa"
    build_lm(SENTENCES, 3, arpa, progress=False)
    assert set(check_lm(binary, VOCABULARY, arpa)) - {"<s>", "</s>", "<unk>"} == unigrams(arpa) == USED_WORDS


@pytest.mark.parametrize("content, problem", [
    (None, "no such word list (--unigrams)"),
    (b" \n\t\n", "holds no words (--unigrams)"),
    (b"\xff\xfe caf\xe9", "not a UTF-8 word list (--unigrams)"),
    ("привет мир кот сидел".encode(), "built on a different alphabet"),
], ids=["missing", "empty", "latin-1", "cyrillic"])
def test_a_word_list_that_cannot_serve_is_named(tmp_path, content, problem):
    binary = tmp_path / "lm.bin"
    binary.write_bytes(KENLM_BINARY_MAGIC + b" \x00")
    words = tmp_path / "words.txt"
    if content is not None:
        words.write_bytes(content)
    with pytest.raises(LanguageModelError) as error:
        check_lm(binary, VOCABULARY, words)
    assert str(error.value).startswith(f"{words}: {problem}")


@pytest.mark.parametrize("words", [
    ["привет", "мир", "кот", "сидел"],
    ["HELLO", "WORLD", "CAT", "SAT"],  # upper case: an LM built on raw, unnormalised text
    ["1", "22", "333", "42nd"],
], ids=["cyrillic", "upper-case", "digits"])
def test_check_lm_refuses_an_lm_on_another_alphabet(tmp_path, words):
    path = tmp_path / "foreign.arpa"
    write_arpa(path, words)
    with pytest.raises(LanguageModelError) as error:
        check_lm(path, VOCABULARY)
    message = str(error.value)
    assert message.startswith(f"{path}: built on a different alphabet"), message
    assert repr(words[0]) in message  # an example of a word the model could never spell
    assert "\n" not in message


def test_check_lm_tolerates_a_few_foreign_words(tmp_path):
    path = tmp_path / "mostly.arpa"
    write_arpa(path, ["the", "cat", "sat", "café"])
    assert check_lm(path, VOCABULARY) == ["<s>", "</s>", "the", "cat", "sat", "café"]


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_lm_build(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [Utterance(tmp_path / "a.wav", 1.0, "Yes, please")])
    out = tmp_path / "out" / "lm.arpa"
    result = run_cli("lm", "build", corpus, manifest, "--order", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: 3-gram model from 5 sentences\n"
    assert "Traceback" not in result.stderr
    assert kenlm.Model(str(out)).order == 3
    assert unigrams(out) == USED_WORDS | {"yes", "please"}


@pytest.mark.slow
def test_cli_lm_build_with_spelled_word_lists(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("enter five\n", encoding="utf-8")
    names = tmp_path / "names.txt"
    names.write_text("Ann\nBob\n", encoding="utf-8")
    out = tmp_path / "lm.arpa"
    result = run_cli("lm", "build", corpus, "--spell", names, "--spell", names, "--order", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: 2-gram model from 5 sentences\n"
    assert unigrams(out) == {"enter", "five", "a", "n", "b", "o"}
    missing = tmp_path / "missing.txt"
    assert_one_line_error(run_cli("lm", "build", corpus, "--spell", missing, "--out", tmp_path / "x.arpa"), missing)
    assert not (tmp_path / "x.arpa").exists()


@pytest.mark.slow
def test_cli_lm_build_text_weight_counts_the_texts_not_the_word_lists(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("enter five\nenter a b\n", encoding="utf-8")
    names = tmp_path / "names.txt"
    names.write_text("Bob\n", encoding="utf-8")
    plain, weighted = tmp_path / "plain.arpa", tmp_path / "weighted.arpa"
    assert run_cli("lm", "build", corpus, "--spell", names, "--order", "2", "--out", plain).returncode == 0
    result = run_cli("lm", "build", corpus, "--spell", names, "--order", "2", "--text-weight", "3", "--out", weighted)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{weighted}: 2-gram model from 7 sentences\n"  # 2 sentences three times, 1 spelled once
    assert unigrams(weighted) == unigrams(plain)

    def logp(path, sentence):
        return kenlm.Model(str(path)).score(sentence, bos=True, eos=True)
    assert logp(weighted, "enter five") > logp(plain, "enter five")  # the texts' sentences gain
    assert logp(weighted, "b o b") < logp(plain, "b o b")  # at the spelled words' expense
    result = run_cli("lm", "build", corpus, "--text-weight", "0", "--out", tmp_path / "x.arpa")
    assert_one_line_error(result, "--text-weight")
    assert not (tmp_path / "x.arpa").exists()


@pytest.mark.slow
def test_cli_lm_build_of_an_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n2024\n")
    out = tmp_path / "lm.arpa"
    result = run_cli("lm", "build", empty, "--out", out)
    assert_one_line_error(result, empty)
    assert not out.exists()


@pytest.mark.slow
def test_cli_lm_build_of_a_missing_corpus(tmp_path):
    missing = tmp_path / "missing.txt"
    out = tmp_path / "lm.arpa"
    result = run_cli("lm", "build", missing, "--out", out)
    assert_one_line_error(result, missing)
    assert not out.exists()


@pytest.mark.slow
def test_cli_transcribe_with_an_lm_kenlm_cannot_load(tmp_path):
    """An LM that passes check_lm but that KenLM refuses (here a unigram model) is a one-line error, not a traceback."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=16, dropout=0.0),
                          FeatureConfig().n_mels, len(VOCABULARY))
    save_checkpoint(tmp_path / "model.pt", model_state(model.eval(), FeatureConfig(), VOCABULARY))
    lm = tmp_path / "unigram.arpa"
    write_unigram_arpa(lm, ["the", "cat", "sat"])
    assert check_lm(lm, VOCABULARY) == ["<s>", "</s>", "the", "cat", "sat"]
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tmp_path / "model.pt", "--lm", lm)
    assert_one_line_error(result, lm)
    assert result.stdout == ""
