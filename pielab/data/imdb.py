"""IMDB sentiment: sources, tokenisation, the training-split vocabulary and the token-batch loader.

Sources, in order: ``data.path`` (a ``.parquet`` like ``../shared/data/imdb.parquet`` with columns ``text``,
``label`` and ``split`` = train/test), or a folder holding ``imdb.parquet`` or the official ``aclImdb/``
tree; then ``$PIELAB_DATA_DIR``; then Hugging Face ``stanfordnlp/imdb`` (``datasets`` is imported only
there), saved once as ``<cache>/raw/imdb.parquet`` so later builds need neither network nor ``datasets``.

Processing (cached per source, ``vocab_size`` and ``max_len``):

* Cleaning: ``<br />`` tags (any ``<br>`` variant) become spaces; text is lowercased.
* Tokeniser (:func:`tokenize`): the regex :data:`TOKEN_PATTERN`, like torchtext's ``basic_english`` in spirit:
  a token is a run of word characters, with inner apostrophes kept (``don't``, ``80's``), or any single
  other non-space character (``.``, ``,``, ``!``, ``"``, ``(`` ...), so punctuation is kept, one token each.
* Vocabulary: the ``vocab_size`` most frequent tokens of the training split's texts (all 25,000 rows, before
  the validation holdout: label-free, and it keeps the cache independent of the split settings), ties
  broken alphabetically. Ids: pad 0, unk 1, words from 2 in that order. Test-only words are unk.
* Encoding: the first ``max_len`` tokens, right-padded with 0; ``lengths = min(len, max_len)``; an empty
  review becomes one unk token (length 1), so packed sequences never see length 0.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from pielab.config import DataConfig
from pielab.data.base import Loader, Prepared, Selection, Source, Task, check_reachable, offline_reason, one_line
from pielab.data.cache import save_array
from pielab.errors import DataError
from pielab.files import json_text, write_atomic

log = logging.getLogger("pielab.data")

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
CLASSES = ("neg", "pos")
TOKEN_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)
HF_DATASET = "stanfordnlp/imdb"


def tokenize(text: str) -> list[str]:
    """Clean ``<br />`` tags, lowercase, split into word and punctuation tokens (see the module doc)."""
    return _TOKEN_RE.findall(_BR_RE.sub(" ", text).lower())


def build_vocab(token_lists: Iterable[Sequence[str]], vocab_size: int) -> list[str]:
    """The ``vocab_size`` most frequent tokens, most frequent first, ties broken alphabetically."""
    counts: collections.Counter[str] = collections.Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:vocab_size]]


def encode(token_lists: Sequence[Sequence[str]], vocab: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 ids (N x max_len, right-padded with 0) and lengths (>= 1: an empty text is one unk)."""
    stoi = {w: i + len(SPECIALS) for i, w in enumerate(vocab)}
    get = stoi.get
    ids = np.zeros((len(token_lists), max_len), dtype=np.int64)
    lengths = np.empty(len(token_lists), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        seq = [get(w, UNK) for w in tokens[:max_len]] or [UNK]
        ids[row, : len(seq)] = seq
        lengths[row] = len(seq)
    return ids, lengths


def encode_texts(texts: Iterable[str], vocab: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw review texts -> (tokens, lengths) exactly as the cache encodes them (for inference and checks)."""
    ids, lengths = encode([tokenize(t) for t in texts], vocab, max_len)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def load_vocab(prepared: Prepared) -> list[str]:
    """Words of a prepared IMDB vocabulary (index = id - 2; ids 0 and 1 are pad and unk)."""
    return json.loads(Path(prepared.meta["vocab_file"]).read_text())


class ImdbLoader(Loader):
    """Batches ``((tokens, lengths), labels)``; ``augment`` is ignored (there is no text augmentation).

    With ``trim`` (default), each batch's tokens are cut to that batch's longest review: right padding makes
    this exact, and it saves compute on short batches. The maximum comes from a CPU copy of the lengths, so
    it costs no device synchronisation. ``trim=False`` keeps a fixed ``max_len`` width (static shapes, e.g. for
    ``torch.compile`` without dynamic shapes).
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], *, trim: bool = True, **kwargs: Any) -> None:
        super().__init__(tensors, **kwargs)
        self.trim = trim

    def _batch(self, sel: Selection, sel_cpu: Selection,
               aug: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        tokens, lengths, labels = self._data
        batch = tokens[sel]
        if self.trim:
            batch = batch[:, : int(self._cpu[1][sel_cpu].max())].contiguous()
        return (batch, lengths[sel]), labels[sel]


class Imdb(Task):
    name = "imdb"
    label = "IMDB"
    fields = ("tokens", "lengths", "labels")
    local_names = ("imdb.parquet", "aclImdb/")
    file_suffixes = (".parquet",)
    path_hint = "FILE.parquet"
    loader_cls = ImdbLoader

    def settings(self, cfg: DataConfig) -> dict[str, Any]:
        return {"vocab_size": cfg.vocab_size, "max_len": cfg.max_len, "tokenizer": TOKEN_PATTERN, "br": _BR_RE.pattern}

    def is_native_dir(self, path: Path) -> bool:
        return all((path / s / c).is_dir() for s in ("train", "test") for c in ("pos", "neg"))

    def download_source(self, root: Path, context: str) -> Source:
        return Source("download", root / "raw" / "imdb.parquet", f"Hugging Face {HF_DATASET} (saved to {root / 'raw'})",
                      identity=f"download:hf-{HF_DATASET}", context=context)

    def model_kwargs(self, meta: dict[str, Any]) -> dict[str, Any]:
        # The configured size (not the words found) keeps the model's shape a function of the config alone.
        return {"vocab_size": int(meta["vocab_size"]) + len(SPECIALS), "pad_idx": PAD, "num_classes": int(meta["num_classes"])}

    def build(self, source: Source, cfg: DataConfig, root: Path, out: Path) -> dict[str, Any]:
        if source.kind == "download":
            self._download(source)
        texts, labels = _read_aclimdb(source.path) if source.kind == "dir" else _read_parquet(source.path)
        num_classes = max(2, int(max(labels["train"].max(), labels["test"].max())) + 1)
        tokens = {s: [tokenize(t) for t in texts[s]] for s in ("train", "test")}
        vocab = build_vocab(tokens["train"], cfg.vocab_size)
        meta: dict[str, Any] = {"classes": list(CLASSES) if num_classes == 2 else [str(i) for i in range(num_classes)],
                                "num_classes": num_classes, "vocab_size": cfg.vocab_size, "vocab_words": len(vocab),
                                "max_len": cfg.max_len, "pad_idx": PAD, "unk_idx": UNK, "tokenizer": TOKEN_PATTERN}
        for split in ("train", "test"):
            ids, lengths = encode(tokens[split], vocab, cfg.max_len)
            save_array(out, f"{split}_tokens", ids)
            save_array(out, f"{split}_lengths", lengths)
            save_array(out, f"{split}_labels", labels[split])
            full = np.array([len(t) for t in tokens[split]])
            meta[f"{split}_truncated_fraction"] = round(float((full > cfg.max_len).mean()), 4)
            meta[f"{split}_unk_fraction"] = round(float((ids == UNK).sum() / max(1, lengths.sum())), 4)
        write_atomic(out / "vocab.json", json_text(vocab, indent=None), fsync=True)
        return meta

    def prepare(self, cfg: DataConfig) -> Prepared:
        prepared = super().prepare(cfg)
        prepared.meta["vocab_file"] = str(Path(prepared.meta["cache_dir"]) / "vocab.json")
        return prepared

    def _download(self, source: Source) -> None:
        """Hugging Face ``stanfordnlp/imdb`` train + test, saved once as a parquet in the shared-file layout."""
        if source.path.is_file():
            return
        reason = offline_reason()
        if reason:
            raise self.download_error(source, reason)
        try:
            import pandas as pd
            from filelock import FileLock

            # In Hugging Face's own offline mode, datasets fails fast by itself (or serves its cache).
            if not offline_reason("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
                check_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
            try:
                import datasets  # lazily: machines without it still read local files and caches
            except ImportError:
                raise self.download_error(source, "the Hugging Face `datasets` package is not installed") from None
            raw = source.path.parent
            raw.mkdir(parents=True, exist_ok=True)
            with FileLock(str(raw / "imdb-download.lock")):
                if source.path.is_file():
                    return
                ds = datasets.load_dataset(HF_DATASET, cache_dir=str(raw / "hf"))
                frame = pd.concat([ds[s].to_pandas()[["text", "label"]].assign(split=s) for s in ("train", "test")],
                                  ignore_index=True)
                write_atomic(source.path, lambda tmp: frame.to_parquet(tmp, index=False))
        except DataError:
            raise
        except Exception as exc:  # network, disk, datasets: all end as one line naming the way out
            raise self.download_error(source, exc) from None


# --------------------------------------------------------------------------- readers


def _read_parquet(path: Path) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:
        raise DataError(f"{path}: cannot read as an IMDB .parquet file ({one_line(exc)})") from None
    missing = [c for c in ("text", "label", "split") if c not in names]
    if missing:
        raise DataError(f"{path}: not an IMDB parquet: missing column(s) {', '.join(missing)} "
                        f"(has {', '.join(names)}; expected text, label, split as in imdb.parquet)")
    try:
        frame = pq.read_table(path, columns=["text", "label", "split"]).to_pandas()
    except Exception as exc:
        raise DataError(f"{path}: cannot read its columns ({one_line(exc)})") from None
    if not np.issubdtype(frame["label"].dtype, np.integer):
        raise DataError(f"{path}: column label must hold integer class ids (0 = negative, 1 = positive), "
                        f"got {frame['label'].dtype}")
    known = frame["split"].isin(["train", "test"])
    if not known.all():
        others = sorted(map(str, frame.loc[~known, "split"].unique()))[:5]
        log.warning("%s: ignoring %d rows whose split is not train/test (%s)", path, int((~known).sum()), ", ".join(others))
    texts, labels = {}, {}
    for split in ("train", "test"):
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise DataError(f"{path}: no rows with split == {split!r} (IMDB needs both train and test rows)")
        texts[split] = rows["text"].fillna("").astype(str).tolist()
        labels[split] = rows["label"].to_numpy(dtype=np.int64)
        if labels[split].min() < 0:
            raise DataError(f"{path}: {split} rows have negative labels (unlabelled rows cannot be used)")
    return texts, labels


def _read_aclimdb(folder: Path) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """The official archive's ``{train,test}/{neg,pos}/<id>_<rating>.txt`` files, in (split, label, id) order."""

    def file_id(p: Path) -> tuple[int, str]:
        head = p.stem.split("_", 1)[0]
        return (int(head), p.name) if head.isdigit() else (1 << 62, p.name)

    texts: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        texts[split], ys = [], []
        for label, sub in enumerate(CLASSES):
            files = sorted((folder / split / sub).glob("*.txt"), key=file_id)
            try:
                texts[split] += [f.read_text(encoding="utf-8") for f in files]
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{folder}: cannot read the review files ({one_line(exc)})") from None
            ys += [label] * len(files)
        if not ys:
            raise DataError(f"{folder}: no review files under {split}/neg or {split}/pos")
        labels[split] = np.asarray(ys, dtype=np.int64)
    return texts, labels


TASK = Imdb()
