"""A bounds-checked decoder for compressai's rANS strings, and what a string must hold.

compressai's C++ ``RansDecoder.decode_with_indexes`` (``cpp_exts/rans/rans_interface.cpp``
over ryg's ``rans64.h``) trusts its input: it reads two 32-bit words to start, then one more
word whenever its 64-bit state drops below ``2**31``, with no end-of-buffer check. Which words
it reads depends on the bytes, not on the string's length, so a short or forged string (an
empty one, for a start) makes it read past its buffer: a different image in each process, or
SIGSEGV. Padding the string is no cure at a sane cost: in the escape ("bypass") mode a run of
``0xF`` nibbles in the data sets how many more nibbles are read (up to 15 per nibble of the
run), and a state that sinks to 0 in zero padding reads a new word for every nibble and every
symbol. A padding that provably covers the over-read is tens of times the string plus over a
hundred bytes per symbol, far more than the decoded tensor.

So the strings are decoded here instead, by :func:`decode_with_indexes`: the same arithmetic
as compressai's decoder, symbol for symbol (the tests check the output is identical on real
streams), which raises :class:`CorruptBitstreamError` the moment it would read past the string,
and also when the string does not end where a real one ends. :func:`guard_entropy_coders`
puts it behind every compressai entropy model of a codec (encoding stays compressai's).

What a real string looks like (the encoder, ``BufferedRansEncoder::flush``): it starts from
the state ``2**31``, emits whole 32-bit words, and ends by flushing its 64-bit state, so

* its length is a multiple of 4 bytes and at least :data:`MIN_STRING_BYTES` (8), even for no
  symbols (the flushed initial state alone);
* decoding it consumes every word and ends in the state ``2**31`` again (rANS decoding
  retraces the encoder's states backwards);
* it is at least :func:`min_string_bytes` long: a symbol of frequency ``f`` (out of
  ``2**16``) costs ``16 - log2(f)`` bits, each word emitted frees 32 bits of state, and the
  flushed state holds at most 32 more bits than the initial one. :func:`cheapest_symbol_bits`
  gives the cheapest symbol of each CDF table.
"""
from __future__ import annotations

import math
import struct
from bisect import bisect_right
from typing import Any, Iterable, List, Sequence

from src.models.codec.bitstream import CorruptBitstreamError

PRECISION = 16                    # CDFs in 16-bit fixed point
RANS_L = 1 << 31                  # lower end of the decoder's state interval; the encoder's start
WORD_BYTES = 4
MIN_STRING_BYTES = 2 * WORD_BYTES  # the flushed 64-bit state
BYPASS_BITS = 4                   # escape-coded values are sent in 4-bit nibbles
MAX_BYPASS_NIBBLES = 8            # a raw value is a uint32: at most 8 nibbles
#: log2 of (1 + 2**-15): the most a state step can exceed its ideal (x >= 2**31 makes x >> 16 within
#: that factor of x / 2**16, and a word read adds less than that factor to x * 2**32)
_STEP_SLACK_BITS = math.log2(1 + 2.0 ** -15)


# --------------------------------------------------------------------------- length rules
def check_string_size(encoded: bytes, what: str = "string") -> None:
    """Raise :class:`CorruptBitstreamError` unless ``encoded`` has a length the encoder can write."""
    n = len(encoded)
    if n < MIN_STRING_BYTES:
        raise CorruptBitstreamError(f"{what} holds {n} bytes; an rANS string holds at least "
                                    f"{MIN_STRING_BYTES} (its flushed 64-bit state)")
    if n % WORD_BYTES:
        raise CorruptBitstreamError(f"{what} holds {n} bytes, not a whole number of 32-bit words")


def cheapest_symbol_bits(cdfs: Sequence[Sequence[int]], cdf_lengths: Sequence[int]) -> List[float]:
    """For each CDF table, the bits of its most probable symbol (escape included): ``16 - log2(max f)``."""
    out = []
    for cdf, n in zip(cdfs, cdf_lengths):
        top = max(cdf[j + 1] - cdf[j] for j in range(int(n) - 1))
        out.append(PRECISION - math.log2(top))
    return out


def min_string_bytes(symbol_bits: float, n_symbols: int) -> int:
    """Fewest bytes of a string coding ``n_symbols`` symbols that cost ``symbol_bits`` in all.

    ``symbol_bits`` is the sum over the symbols of their cheapest possible cost (see
    :func:`cheapest_symbol_bits`). Decoding a real string walks the state from the flushed
    value (below ``2**63``) to ``2**31``; a symbol of frequency ``f`` shrinks it by at least
    ``2**16 / f`` up to the slack factor, a word read grows it by at most ``2**32`` times
    that factor. So ``32 R >= symbol_bits - 32 - slack * (n_symbols + R)`` for the ``R``
    words after the first two; one more bit of margin keeps float rounding on the safe side.
    """
    need = (symbol_bits - n_symbols * _STEP_SLACK_BITS - 32 - 1) / (32 + _STEP_SLACK_BITS)
    return MIN_STRING_BYTES + WORD_BYTES * max(0, math.ceil(need))


# --------------------------------------------------------------------------- decoding
def _words(encoded: bytes) -> tuple:
    """The string as native 32-bit words, as the C++ decoder reads it (``(uint32_t *) data``)."""
    return struct.unpack(f"={len(encoded) // WORD_BYTES}I", encoded)


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def decode_with_indexes(encoded: bytes, indexes: Sequence[int], cdfs: Sequence[Sequence[int]],
                        cdf_lengths: Sequence[int], offsets: Sequence[int]) -> List[int]:
    """compressai's ``RansDecoder.decode_with_indexes``, but it never reads past ``encoded``.

    Same arguments and same output as compressai's (``cdfs`` rows may be longer than their
    ``cdf_lengths``, as compressai pads them). Raises :class:`CorruptBitstreamError` when the
    string is too short for its symbols, when an escape declares more nibbles than a 32-bit
    value has, and when the string does not end where a real one ends (words left over, or a
    final state other than the encoder's initial one).
    """
    stream = CheckedRansStream(encoded)
    out = stream.decode(indexes, cdfs, cdf_lengths, offsets)
    stream.finish()
    return out


class CheckedRansStream:
    """Decodes consecutive groups of symbols from one string, as compressai's ``RansDecoder``
    does with ``set_stream`` / ``decode_stream`` after a ``BufferedRansEncoder`` wrote the groups
    in the same order, but never past the string's end. Call :meth:`finish` after the last group:
    it raises unless the string ended exactly there, like a coded one.
    """

    def __init__(self, encoded: bytes):
        encoded = bytes(encoded)
        check_string_size(encoded)
        self._words = _words(encoded)
        self._x, self._p = self._words[0] | self._words[1] << 32, 2
        self.symbols = 0            # decoded so far, for error messages

    def decode(self, indexes: Sequence[int], cdfs: Sequence[Sequence[int]], cdf_lengths: Sequence[int],
               offsets: Sequence[int]) -> List[int]:
        """The next ``len(indexes)`` symbols, each with the CDF table its index names."""
        words, n_words = self._words, len(self._words)
        x, p = self._x, self._p
        escape = [int(n) - 2 for n in cdf_lengths]
        out = [0] * len(indexes)
        first = self.symbols
        for i, t in enumerate(indexes):
            cdf = cdfs[t]
            cum = x & 0xFFFF
            s = bisect_right(cdf, cum, 0, escape[t] + 2) - 1   # the first CDF entry above cum, minus one
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < RANS_L:
                if p == n_words:
                    raise _overrun(first + i, n_words)
                x, p = x << 32 | words[p], p + 1
            if s == escape[t]:
                x, p, s = _bypass(x, p, words, escape[t], first + i)
            out[i] = _int32(s + offsets[t])
        self._x, self._p = x, p
        self.symbols += len(indexes)
        return out

    def finish(self) -> None:
        n_words = len(self._words)
        if self._p != n_words or self._x != RANS_L:
            raise CorruptBitstreamError(
                f"rANS string does not end like a coded one: {n_words - self._p} of its {n_words} words left "
                f"over, final state {self._x:#x} (a real string ends with none, in state {RANS_L:#x})")


def _bypass(x: int, p: int, words: tuple, max_value: int, i: int):
    """The escape of one symbol: a nibble count (runs of 15 continue it), then the raw nibbles."""
    def nibble():
        nonlocal x, p
        val, x = x & 0xF, x >> BYPASS_BITS
        if x < RANS_L:
            if p == len(words):
                raise _overrun(i, len(words))
            x, p = x << 32 | words[p], p + 1
        return val

    count = val = nibble()
    while val == 0xF:
        val = nibble()
        count += val
        if count > MAX_BYPASS_NIBBLES:
            break
    if count > MAX_BYPASS_NIBBLES:
        raise CorruptBitstreamError(f"rANS symbol {i} escapes with {count} nibbles; a 32-bit value has "
                                    f"at most {MAX_BYPASS_NIBBLES}")
    raw = 0
    for j in range(count):
        raw |= nibble() << (BYPASS_BITS * j)
    raw = _int32(raw)
    value = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + max_value
    return x, p, value


def _overrun(i: int, n_words: int) -> CorruptBitstreamError:
    return CorruptBitstreamError(f"rANS string of {n_words * WORD_BYTES} bytes ends at symbol {i} "
                                 f"(the decoder would read past it)")


# --------------------------------------------------------------------------- installing it
class CheckedRansCoder:
    """Stands in for compressai's ``_EntropyCoder``: its encoder, :func:`decode_with_indexes` to decode."""

    def __init__(self, coder: Any):
        self._coder = coder
        self.name = coder.name   # what compressai pickles

    def encode_with_indexes(self, *args, **kwargs):
        return self._coder.encode_with_indexes(*args, **kwargs)

    @staticmethod
    def decode_with_indexes(*args, **kwargs) -> List[int]:
        return decode_with_indexes(*args, **kwargs)


def guard_entropy_coders(modules: Iterable[Any]) -> int:
    """Give every compressai entropy model among ``modules`` the checked decoder; returns how many.

    Pass ``model.modules()``. Only the ``"ans"`` coder is replaced (its string format is the
    one :func:`decode_with_indexes` reads); a model already guarded is left as it is.
    """
    from compressai.entropy_models import EntropyModel

    n = 0
    for m in modules:
        if isinstance(m, EntropyModel) and getattr(m.entropy_coder, "name", None) == "ans":
            if not isinstance(m.entropy_coder, CheckedRansCoder):
                m.entropy_coder = CheckedRansCoder(m.entropy_coder)
            n += 1
    return n
