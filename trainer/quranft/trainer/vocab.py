"""The vocabulary gate: transcripts folded into the characters the base model's tokenizer knows.

`prepare` reads the SentencePiece tokenizer of `training.baseModel` (the model the run fine-tunes; `tiny`
for the CPU stub) without loading the model: a `.nemo` is a tar holding `<id>_tokenizer.model`, read
straight from it; a hub name is first resolved to its `.nemo` in the Hugging Face cache, as the trainer
resolves it. The tokenizer's inventory is every character of its pieces except the word-boundary marker
`▁`.

`fold` rewrites only the characters the inventory lacks, by FOLD_TABLE (one row per kind of character, each
with the reason): a diacritic the tokenizer knows is kept as written, one it does not know is dropped or
mapped to what the simple (imla'i) script writes. A character still unknown afterwards is out of
vocabulary: it becomes `<unk>` tokens, counted per dataset with examples, and a dataset whose `<unk>` rate
is above `data.maxUnkRate` fails prepare with a DataError that names those characters.

The fold is not the benchmark's `normalize_arabic`: that one strips every mark to *match* text; this one
keeps everything the tokenizer can learn, because the folded text is what the model is trained to write.
"""
from __future__ import annotations

import hashlib
import json
import re
import tarfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quranft.contract.config import ConfigError
from quranft.trainer.errors import DataError

WORD_BOUNDARY = "\u2581"  # SentencePiece's space
TATWEEL = "\u0640"
SUPERSCRIPT_ALEF = "\u0670"
ALEF_MAKSURA = "\u0649"
# Combining hamza/madda: composed with the letter they sit on (ا + ◌ٓ = آ) before the table applies.
COMBINING_SEATED = "\u0653\u0654\u0655"
TOP_OOV = 10
EXAMPLE_CHARS = 80


@dataclass(frozen=True)
class Fold:
    """One row of the fold table: `chars` become the first of `to` made only of known characters."""
    chars: str
    to: tuple[str, ...]
    why: str


def _span(first: str, last: str) -> str:
    return "".join(chr(c) for c in range(ord(first), ord(last) + 1))


# Applied to a character only when the tokenizer does not know it. `to` is tried in order; "" (drop) always
# fits; a row whose candidates all contain unknown characters leaves the character (it is then OOV).
FOLD_TABLE: tuple[Fold, ...] = (
    # Letters written differently in the Uthmani script or by other Arabic-script keyboards.
    Fold("\u0671", ("\u0627",), "alef wasla ٱ: an alef elided in connected speech; the simple script writes ا"),
    Fold("\u0622", ("\u0627",), "alef with madda آ: the bare alef (the tokenizer has no hamza forms)"),
    Fold("\u0623\u0625\u0672\u0673\u0675", ("\u0627",), "alef with hamza above/below, wavy hamza, high hamza: ا"),
    Fold("\u0624", ("\u0648",), "waw with hamza ؤ: و (as the benchmark's normalisation folds it)"),
    Fold("\u0626", ("\u064a", ALEF_MAKSURA), "yeh with hamza ئ: ي"),
    Fold("\u0629", ("\u0647",), "teh marbuta ة: ه"),
    Fold(ALEF_MAKSURA, ("\u064a",), "alef maksura ى: ي"),
    Fold("\u06cc\u06d0", ("\u064a",), "Farsi yeh ی, yeh with two dots below: Arabic ي"),
    Fold("\u06a9\u06aa", ("\u0643",), "keheh ک, swash kaf: Arabic ك"),
    Fold("\u06c1\u06be\u06d5", ("\u0647",), "heh goal, heh doachashmee, ae: Arabic ه"),
    # Uthmani orthography: marks standing for letters.
    Fold(SUPERSCRIPT_ALEF, ("\u0627",), "superscript (dagger) alef: a long a the simple script writes as ا "
         "(مَـٰلِكِ: مالك, ٱلْعَـٰلَمِينَ: العالمين); dropped instead after ى (عَلَىٰ: على) and in the words the "
         "simple script spells without their long a (HIDDEN_ALEF_WORDS: هذا, ذلك, لكن, الرحمن, ...)"),
    Fold("\u06e7", ("\u064a",), "small high yeh ۧ: a yeh the simple script writes (ٱلنَّبِيِّـۧنَ: النبيين)"),
    Fold("\u06e5", ("",), "small waw ۥ: lengthens the damma of هُۥ; the simple script writes nothing (لَهُۥ: لَهُ)"),
    Fold("\u06e6", ("",), "small yeh ۦ: lengthens the kasra of هِۦ; the simple script writes nothing (بِهِۦ: بِهِ)"),
    Fold("\u0653", ("",), "maddah above on a letter that has no madda form (قَالُوٓا۟): an elongation sign"),
    Fold("\u0654\u0655", ("\u0621", ""), "hamza above/below not composable with its letter (on a tatweel, "
         "شَيْـًٔا): the hamza letter ء, where the tatweel stood"),
    Fold(TATWEEL, ("",), "tatweel ـ: a stretching stroke, no sound"),
    # Vowel and recitation marks: kept when the tokenizer knows them (a diacritised model), else dropped.
    Fold(_span("\u064b", "\u0652"), ("",), "harakat, tanwin, shadda, sukun: vowel marks the tokenizer lacks"),
    Fold("\u06e1", ("\u0652", ""), "small high dotless head of khah: the Uthmani sukun"),
    Fold("\u08f0", ("\u064b", ""), "open fathatan (Quran fonts): fathatan"),
    Fold("\u08f1", ("\u064c", ""), "open dammatan: dammatan"),
    Fold("\u08f2", ("\u064d", ""), "open kasratan: kasratan"),
    Fold("\u0618", ("\u064e", ""), "small fatha: fatha"),
    Fold("\u0619", ("\u064f", ""), "small damma: damma"),
    Fold("\u061a", ("\u0650", ""), "small kasra: kasra"),
    Fold(_span("\u0656", "\u065f"), ("",), "other combining marks (subscript alef, inverted damma, ...)"),
    Fold("\u06df\u06e0", ("",), "small high rounded / upright rectangular zero: a letter written, not pronounced"),
    Fold("\u06e2\u06ed", ("",), "small high / low meem: iqlab, a tajweed sign (the n is said as m)"),
    Fold("\u06e3\u06e4\u06e8", ("",), "small low seen, small high madda, small high noon: tajweed signs"),
    # Quranic annotation: pause marks, layout signs, verse numbers. None of it is recited.
    Fold(_span("\u06d6", "\u06dc"), ("",), "pause (waqf) marks ۖ ۗ ۘ ۙ ۚ ۛ ۜ"),
    Fold("\u06dd\u06de\u06e9", (" ",), "end of ayah ۝, rub el hizb ۞, place of sajdah ۩: layout signs"),
    Fold(_span("\u06ea", "\u06ec"), ("",), "empty-centre and rounded stop marks"),
    Fold(_span("\u0610", "\u0617"), ("",), "honorifics and small high marks ؐ ؑ ؒ ؓ ؔ ؕ ؖ ؗ"),
    Fold(_span("\u08d3", "\u08ef") + _span("\u08f3", "\u08ff"), ("",), "Arabic Extended-A Quranic marks"),
    Fold("\ufd3e\ufd3f", (" ",), "ornate parentheses ﴾ ﴿ around verse numbers"),
    Fold(_span("0", "9") + _span("\u0660", "\u0669") + _span("\u06f0", "\u06f9"), ("",),
         "digits: verse numbers (the Quran writes its numbers as words, so digits are never recited)"),
    # Punctuation is not spoken: a word boundary when the tokenizer has no such piece.
    Fold("\u060c\u061b\u061f\u066a\u066b\u066c\u06d4.,;:!?\"'()[]{}«»\u2026\u2013\u2014-\u201c\u201d",
         (" ",), "punctuation: not spoken"),
    Fold("\u200b\u200c\u200d\u200e\u200f\u061c\ufeff\u00ad", ("",), "zero-width and direction marks: invisible"),
)
_FOLDS: dict[str, tuple[str, ...]] = {}
for _row in FOLD_TABLE:
    for _ch in _row.chars:
        if _ch in _FOLDS:
            raise AssertionError(f"FOLD_TABLE: U+{ord(_ch):04X} has two rows")
        _FOLDS[_ch] = _row.to
_SPACES = re.compile(r"\s+")
# The imla'i words written without their long a, which Uthmani and vocalised text mark with a dagger alef:
# هذا هذه هذان هؤلاء هكذا، ذلك كذلك ذلكم، لكن، أولئك، إله، الرحمن. Matched on a word's letters (marks and
# tatweel removed, dagger alef kept). On Tanzil's text, folded for the tiny tokenizer and compared with
# the simple script: Uthmani differs by 0.81% of characters with this rule and 1.16% without it (2.2% if
# the dagger alef were dropped everywhere); the simple style itself by 0.00% (0.35% without).
HIDDEN_ALEF_WORDS = re.compile("ه\u0670[ذؤك]|ذ\u0670لك|ل\u0670كن|ول\u0670ئك|[اأإ]ل\u0670ه|رحم\u0670ن")


def _combining(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me")


def _replacement(ch: str, inv: frozenset[str]) -> str | None:
    """What an unknown `ch` becomes: its table row's first fitting candidate, else its NFKC compatibility
    form (Arabic presentation forms: ﻻ is لا) when that is known; None when nothing fits (OOV)."""
    for candidate in _FOLDS.get(ch, ()):
        if all(c in inv or c.isspace() for c in candidate):  # a space is a word boundary, always known
            return candidate
    compat = unicodedata.normalize("NFKC", ch)
    if compat != ch and compat.strip() and all(c in inv or c.isspace() for c in compat):
        return compat
    return None


def _letters(word: str) -> str:
    return "".join(c for c in word if c == SUPERSCRIPT_ALEF or not (_combining(c) or c == TATWEEL)
                   ).replace("\u0671", "\u0627")


def _drop_silent_dagger_alef(text: str, note) -> str:
    """The superscript alef rows that depend on context: after ى, and in HIDDEN_ALEF_WORDS, it is dropped."""
    def word(m: re.Match) -> str:
        w = m.group(0)
        if SUPERSCRIPT_ALEF not in w:
            return w
        if HIDDEN_ALEF_WORDS.search(_letters(w)):
            kept = w.replace(SUPERSCRIPT_ALEF, "")
        else:  # ىٰ is a final long a already written by ى
            kept = w.replace(ALEF_MAKSURA + SUPERSCRIPT_ALEF, ALEF_MAKSURA)
        for _ in range(len(w) - len(kept)):
            note(SUPERSCRIPT_ALEF, "")
        return kept
    return re.sub(r"\S+", word, text)


def fold(text: str, inventory: frozenset[str] | set[str], changes: Counter | None = None) -> str:
    """`text` with every character the tokenizer lacks folded by FOLD_TABLE; whitespace collapsed.

    Characters in `inventory` are never touched. `changes` (optional) counts `(from, to)` pairs.
    """
    inv = frozenset(inventory)

    def note(old: str, new: str) -> None:
        if changes is not None:
            changes[(old, new)] += 1

    if SUPERSCRIPT_ALEF not in inv and SUPERSCRIPT_ALEF in text:
        text = _drop_silent_dagger_alef(text, note)
    out: list[str] = []
    base: int | None = None  # index in `out` of the last letter (marks compose with it)
    seat: int | None = None  # where a dropped tatweel stood: a hamza written on it becomes a letter there
    for ch in text:
        if ch in inv or ch.isspace():
            if not _combining(ch):
                base, seat = (None, None) if ch.isspace() else (len(out), None)
            out.append(ch)
            continue
        if ch in COMBINING_SEATED and seat is None and base is not None:
            composed = unicodedata.normalize("NFC", out[base] + ch)
            if len(composed) == 1:  # ا + ◌ٓ = آ, ي + ◌ٔ = ئ, ...: then fold the composed letter if unknown
                letter = composed if composed in inv else _replacement(composed, inv)
                if letter is not None and len(letter) == 1 and not _combining(letter):
                    note(out[base] + ch, letter)
                    out[base] = letter
                    continue
        new = _replacement(ch, inv)
        if new is None:  # out of vocabulary: left for the counts (and the gate)
            if not _combining(ch):
                base, seat = len(out), None
            out.append(ch)
            continue
        note(ch, new)
        if ch == TATWEEL and not new:
            seat = len(out)
            continue
        if ch in COMBINING_SEATED and seat is not None and new:
            out.insert(seat, new)  # the marks written after the tatweel belong to the hamza
            base, seat = seat, None
            continue
        for c in new:
            if c.isspace():
                base = seat = None
            elif not _combining(c):
                base, seat = len(out), None
            out.append(c)
    return _SPACES.sub(" ", "".join(out)).strip()


def describe_char(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'UNNAMED')}"


def _shown(ch: str) -> str:
    return f"\u25cc{ch}" if _combining(ch) else ch  # a mark on a dotted circle, readable in JSON and logs


# ------------------------------------------------------------------------------------------ tokenizers

@dataclass
class Tokenizer:
    """A SentencePiece model and what the gate needs of it."""
    processor: Any  # sentencepiece.SentencePieceProcessor
    base_model: str
    inventory: frozenset[str] = field(init=False)
    sha256: str = field(init=False)
    unk_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = inventory(self.processor)
        self.sha256 = fingerprint(self.processor)
        self.unk_id = int(self.processor.unk_id())

    @classmethod
    def from_bytes(cls, model_proto: bytes, base_model: str) -> "Tokenizer":
        import sentencepiece

        try:
            processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except Exception as exc:  # RuntimeError from the C++ side on a corrupt model
            raise ConfigError(f"training.baseModel {base_model}: unreadable tokenizer model: {exc}") from exc
        return cls(processor, base_model)

    @classmethod
    def from_model(cls, model, base_model: str) -> "Tokenizer":
        """The tokenizer of a loaded NeMo model (NeMo's SentencePieceTokenizer wraps the processor)."""
        processor = getattr(model.tokenizer, "tokenizer", None)
        if processor is None or not hasattr(processor, "serialized_model_proto"):
            raise ConfigError(f"training.baseModel {base_model}: the model has no SentencePiece tokenizer")
        return cls(processor, base_model)

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def describe(self) -> dict[str, Any]:
        return {"baseModel": self.base_model, "sha256": self.sha256, "pieces": int(self.processor.get_piece_size()),
                "characters": "".join(sorted(self.inventory))}


def _processor(tokenizer: Any) -> Any:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.processor
    return tokenizer if hasattr(tokenizer, "get_piece_size") else tokenizer.tokenizer  # NeMo's wrapper


def inventory(tokenizer: Any) -> frozenset[str]:
    """The characters of the tokenizer's pieces (normal pieces, and one-character user-defined ones), minus
    `▁`. Control, unknown, unused and byte-fallback pieces spell no characters."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(_processor(tokenizer).serialized_model_proto())
    chars: set[str] = set()
    for piece in proto.pieces:
        if piece.type == pb.ModelProto.SentencePiece.NORMAL or (
                piece.type == pb.ModelProto.SentencePiece.USER_DEFINED and len(piece.piece) == 1):
            chars.update(piece.piece)
    chars.discard(WORD_BOUNDARY)
    return frozenset(chars)


def fingerprint(tokenizer: Any) -> str:
    """sha256 of the serialised SentencePiece model: the same for a tokenizer read from a .nemo, from the
    tiny model's cache, or from a loaded model."""
    return hashlib.sha256(_processor(tokenizer).serialized_model_proto()).hexdigest()


def read_nemo_tokenizer(path: Path, base_model: str | None = None) -> bytes:
    """The SentencePiece model inside a .nemo (a tar, or a directory NeMo extracted it into), found by
    `tokenizer.model_path` in its model_config.yaml, else by the only `*tokenizer.model` member."""
    import yaml

    name = base_model or str(path)
    if path.is_dir():
        files = {p.name: p for p in path.rglob("*") if p.is_file()}

        def read(member: str) -> bytes:
            return files[member].read_bytes()
        names = set(files)
        tar = None
    else:
        try:
            tar = tarfile.open(path, "r:*")
        except (OSError, tarfile.TarError) as exc:
            raise ConfigError(f"training.baseModel {name}: not a readable .nemo archive: {exc}") from exc
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def read(member: str) -> bytes:
            return tar.extractfile(members[member]).read()
        names = set(members)
    try:
        wanted = None
        if "model_config.yaml" in names:
            cfg = yaml.safe_load(read("model_config.yaml")) or {}
            tok = cfg.get("tokenizer") or {}
            if tok.get("type") not in (None, "bpe", "unigram"):
                raise ConfigError(f"training.baseModel {name}: a {tok.get('type')!r} tokenizer; the vocabulary "
                                  "gate reads SentencePiece (bpe) tokenizers only")
            model_path = tok.get("model_path") or tok.get("model")
            if isinstance(model_path, str):
                wanted = model_path.removeprefix("nemo:").rsplit("/", 1)[-1]
        candidates = [wanted] if wanted in names else sorted(n for n in names if n.endswith("tokenizer.model"))
        if len(candidates) != 1:
            raise ConfigError(f"training.baseModel {name}: expected one SentencePiece tokenizer.model inside, "
                              f"found {candidates or 'none'}")
        return read(candidates[0])
    finally:
        if tar is not None:
            tar.close()


def resolve_hub_model(base_model: str) -> Path:
    """The .nemo of a hub (or NGC) model name in the local cache (HF_HOME: the claim), downloading it the
    first time: NeMo's own resolution, so the train stage finds the very same file."""
    from nemo.collections.asr.models import ASRModel

    try:
        return Path(ASRModel.from_pretrained(base_model, return_model_file=True))
    except Exception as exc:  # not found, no network, no access: retried like any unreadable source
        raise DataError(f"training.baseModel {base_model}: cannot fetch the model to read its tokenizer: "
                        f"{type(exc).__name__}: {exc}") from exc


def load_tokenizer(base_model: str) -> Tokenizer:
    """The tokenizer of `training.baseModel`, resolved the way quranft.trainer.model.load_base resolves it."""
    if base_model == "tiny":
        from quranft.trainer.tiny import tokenizer_dir

        return Tokenizer.from_bytes((tokenizer_dir() / "tokenizer.model").read_bytes(), base_model)
    path = Path(base_model)
    if base_model.endswith(".nemo") or "/" in base_model and path.exists():
        if not path.is_file():
            raise ConfigError(f"training.baseModel: {base_model} does not exist")
        return Tokenizer.from_bytes(read_nemo_tokenizer(path, base_model), base_model)
    resolved = resolve_hub_model(base_model)
    return Tokenizer.from_bytes(read_nemo_tokenizer(resolved, base_model), base_model)


# ------------------------------------------------------------------------------------------- counting

@dataclass
class VocabCounts:
    """What the fold did to one dataset's transcripts and what the tokenizer makes of the result."""
    transcripts: int = 0
    changed: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    folded: Counter = field(default_factory=Counter)
    oov: Counter = field(default_factory=Counter)
    oov_examples: dict[str, str] = field(default_factory=dict)

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.tokens if self.tokens else 0.0

    def to_json(self, top: int = TOP_OOV) -> dict[str, Any]:
        return {
            "transcripts": self.transcripts, "changedByFold": self.changed, "tokens": self.tokens,
            "unkTokens": self.unk_tokens, "unkRate": round(self.unk_rate, 6),
            "oovCharacters": sum(self.oov.values()),
            "oov": [{"char": _shown(ch), "codepoint": describe_char(ch), "count": n,
                     "example": self.oov_examples.get(ch, "")} for ch, n in self.oov.most_common(top)],
            "folded": [{"from": "".join(_shown(c) for c in old), "to": "".join(_shown(c) for c in new),
                        "codepoints": " ".join(f"U+{ord(c):04X}" for c in old) + " -> "
                        + (" ".join(f"U+{ord(c):04X}" for c in new) or "(dropped)"), "count": n}
                       for (old, new), n in self.folded.most_common(2 * top)],
        }


class Gate:
    """Folds transcripts for one tokenizer, counts per dataset, enforces `data.maxUnkRate`."""

    def __init__(self, tokenizer: Tokenizer, max_unk_rate: float):
        self.tokenizer, self.max_unk_rate = tokenizer, max_unk_rate

    def fold(self, text: str, counts: VocabCounts | None = None) -> str:
        return fold(text, self.tokenizer.inventory, counts.folded if counts is not None else None)

    def count(self, folded: str, counts: VocabCounts, *, changed: bool) -> None:
        """Record one kept transcript (already folded)."""
        ids = self.tokenizer.encode(folded)
        counts.transcripts += 1
        counts.changed += changed
        counts.tokens += len(ids)
        counts.unk_tokens += sum(1 for i in ids if i == self.tokenizer.unk_id)
        for ch in folded:
            if ch not in self.tokenizer.inventory and not ch.isspace():
                counts.oov[ch] += 1
                counts.oov_examples.setdefault(ch, folded[:EXAMPLE_CHARS])

    def check(self, label: str, counts: VocabCounts, where: str) -> None:
        """DataError naming the unknown characters when `label`'s <unk> rate is above the threshold."""
        if counts.unk_rate <= self.max_unk_rate:
            return
        chars = "; ".join(f"{_shown(ch)!r} {describe_char(ch)} x{n} (e.g. {counts.oov_examples.get(ch, '')!r})"
                          for ch, n in counts.oov.most_common(TOP_OOV))
        raise DataError(
            f"vocabulary gate: {label} ({where}): {counts.unk_tokens} of {counts.tokens} tokens "
            f"({counts.unk_rate:.2%}) are <unk> for the tokenizer of training.baseModel "
            f"{self.tokenizer.base_model}, above data.maxUnkRate {self.max_unk_rate}; characters it does not "
            f"know, after the Quranic fold table: {chars or 'none (its own normalisation makes the <unk>)'}")


# ---------------------------------------------------------------------------- prepared data, reused

def recorded_tokenizer(stats: dict[str, Any] | None) -> str | None:
    """The sha256 of the tokenizer a prepared directory's transcripts were folded for (None: before the gate)."""
    return (((stats or {}).get("vocabulary") or {}).get("tokenizer") or {}).get("sha256")


def source_text(line: dict[str, Any]) -> str:
    """A manifest line's transcript as the dataset wrote it (prepare keeps it when the fold changed it)."""
    return line.get("source_text", line.get("text", ""))


def refold_manifest(src: Path, gate: Gate, dst: Path | None = None) -> VocabCounts:
    """Fold every line of `src` from its source text for `gate`'s tokenizer and count; write to `dst`."""
    counts = VocabCounts()
    out = dst.open("w", encoding="utf-8") if dst is not None else None
    try:
        with src.open(encoding="utf-8") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                original = source_text(line)
                folded = gate.fold(original, counts)
                gate.count(folded, counts, changed=folded != original)
                if out is not None:
                    line["text"] = folded
                    if folded != original:
                        line["source_text"] = original
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if out is not None:
            out.close()
    return counts


def refold_all(manifests: dict[str, Path], gate: Gate, out_dir: Path | None = None) -> dict[str, VocabCounts]:
    """refold_manifest for each named manifest (into `out_dir/<its name>` when given); gate each one."""
    result: dict[str, VocabCounts] = {}
    for name, path in manifests.items():
        dst = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            dst = out_dir / path.name
        result[name] = counts = refold_manifest(path, gate, dst)
        gate.check(name, counts, str(path))
    return result


def brief(entry: dict[str, Any], top: int = 3) -> dict[str, Any]:
    """The summary form of one dataset's VocabCounts.to_json (the termination message must fit 4 KB)."""
    return {"unkRate": entry.get("unkRate"), "tokens": entry.get("tokens"),
            "oov": {o["char"]: o["count"] for o in (entry.get("oov") or [])[:top]}}
