"""A character- or byte-level language-modelling corpus: one text file under the operator's data root, never
anywhere else (the root ``idx`` reads from, checked the same way at validation and again at load time)."""

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from engine.datasets import Data, Dataset, DataShape
from engine.datasets.idx import ROOT_ENV, _under_root
from engine.registry import Params


class TextCorpusParams(Params):
    path: str = Field("input.txt", min_length=1, max_length=1024, description=f"a text file, relative to {ROOT_ENV}")
    context: int = Field(64, ge=1, le=65536, description="tokens per sequence (the model's context length)")
    level: Literal["char", "byte"] = Field("char", description="char: the file's distinct characters; byte: 256")
    limit: int | None = Field(None, ge=2, le=2**31 - 1, description="read only the first tokens")

    @field_validator("path")
    @classmethod
    def _a_file_inside_root(cls, path: str) -> str:
        if not _under_root(Path(path)).is_file():
            raise ValueError(f"no file {path!r} under {ROOT_ENV}")
        return path  # kept relative, so a worker with the root mounted elsewhere resolves it again


class TextCorpus(Dataset[TextCorpusParams]):
    name = "text_corpus"
    description = (
        f"Next-token prediction on a UTF-8 text file under {ROOT_ENV}: cut into sequences of 'context' tokens "
        "(characters or bytes) that do not overlap, each with its targets shifted by one."
    )
    task = "sequence"
    standardize_by_default = False
    Params = TextCorpusParams
    size_param = "limit"

    @classmethod
    def load(cls, params: TextCorpusParams) -> Data:
        tokens, vocab = _tokens(params)
        n, t = (len(tokens) - 1) // params.context, params.context
        x = tokens[: n * t].reshape(n, t)
        y = tokens[1 : n * t + 1].reshape(n, t)
        return Data(x=x, y=y, task="sequence", n_outputs=vocab)

    @classmethod
    def shape(cls, params: TextCorpusParams) -> DataShape:
        tokens, vocab = _tokens(params)
        n = (len(tokens) - 1) // params.context
        if n < 1:
            raise ValueError(f"the file has {len(tokens)} tokens: fewer than one sequence of context {params.context}")
        return DataShape(n, (params.context,), vocab)


def _tokens(params: TextCorpusParams) -> tuple[torch.Tensor, int]:
    raw = _under_root(Path(params.path)).read_bytes()  # re-checked here: the root may differ on a worker
    if params.level == "byte":
        data = raw[: params.limit] if params.limit else raw
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64), 256
    text = raw.decode("utf-8", errors="replace")
    text = text[: params.limit] if params.limit else text
    alphabet = {c: i for i, c in enumerate(sorted(set(text)))}
    return torch.tensor([alphabet[c] for c in text], dtype=torch.int64), max(len(alphabet), 2)
