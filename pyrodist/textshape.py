"""How many values a json or serpent text holds, counted without decoding it.

Decoding builds every value of a text at once: json about 8 to 70 bytes per value, serpent (Python's own
parser, then `ast.literal_eval`) about 1 to 1.6 KB per token. A text is measured before it is decoded, so
that one with too many values is refused at the cost of reading it, not at hundreds of times its size.
"""

from __future__ import annotations

import io
import re
import tokenize

MEASURED_ABOVE = 64 * 1024
"""Texts longer than this are measured before they are decoded (below, even the worst costs about 26 MB)."""
MAX_JSON_VALUES = 500_000
"""Most values one json call may hold (about 36 MB once decoded; a batch of 10,000 tasks holds about 80,000)."""
MAX_SERPENT_TOKENS = 250_000
"""Most tokens one serpent text may hold (about 200 MB while Python parses it; 10,000 plain tasks: 120,000)."""

_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"')
"""The rest of a json string after its opening quote, up to and with its closing one."""


def json_values(data: bytes, most: int = MAX_JSON_VALUES) -> int:
    """About how many values json data holds (separators and openings outside strings), counted up to most + 1.

    Each string is skipped where it lies: nothing is copied, so a refused text costs only its own bytes.
    """

    def structural(start: int, end: int) -> int:
        return data.count(b",", start, end) + data.count(b"[", start, end) + data.count(b"{", start, end)

    count = structural(0, len(data))
    if count <= most:  # counted in strings too, so at least the real number: no need to look closer
        return count
    count, pos = 0, 0
    while (quote := data.find(b'"', pos)) >= 0:
        count += structural(pos, quote)
        rest = _STRING_REST.match(data, quote + 1)
        if count > most or rest is None:  # too many already, or an unclosed string the decoder refuses
            return count
        pos = rest.end()
    return count + structural(pos, len(data))


def serpent_tokens(text: str, most: int = MAX_SERPENT_TOKENS) -> int:
    """The tokens of serpent (Python literal) text, counted up to most + 1 (then it stops reading).

    Python's tokenizer is the only safe measure: a comment or a string prefix would fool a pattern into
    skipping values that the parser then builds. It reads an f-string as one token, although the parser
    builds every value inside it: serpent never writes one, so one is refused. Raises ValueError for text
    it cannot read or that holds an f-string.
    """
    count = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and _is_fstring(token.string):
                raise ValueError(f"not serpent text: an f-string at line {token.start[0]}, column {token.start[1]}")
            count += 1
            if count > most:
                break
    except (tokenize.TokenError, SyntaxError) as exc:
        raise ValueError(f"not serpent text: {exc}") from None
    return count


def _is_fstring(token: str) -> bool:
    """Whether a string token's prefix (the letters before its first quote) holds an f."""
    quote = min(i for i in (token.find("'"), token.find('"')) if i >= 0)
    return "f" in token[:quote].lower()
