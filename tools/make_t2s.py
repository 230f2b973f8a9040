"""Writes src/poem/data/t2s.txt: traditional characters and their simplified
forms, one pair a line, for the rule engine to read a traditional poem by the
simplified 平水韵 table (`yingshi check`, the bot's /check and your own line).

Taken from OpenCC's `t2s` conversion (Apache-2.0, the `opencc` package on PyPI,
the same one training/prepare.py uses for the corpus): every CJK unified
ideograph that OpenCC turns into one other character.

    python tools/make_t2s.py
"""

from pathlib import Path

from opencc import OpenCC

OUT = Path(__file__).resolve().parent.parent / "src" / "poem" / "data" / "t2s.txt"


def main() -> None:
    convert = OpenCC("t2s").convert
    pairs = []
    for code in range(0x4E00, 0xA000):
        c = chr(code)
        s = convert(c)
        if s != c and len(s) == 1:
            pairs.append(c + s)
    header = (
        "# Traditional character, then its simplified form (OpenCC t2s, Apache-2.0).\n"
        "# Written by tools/make_t2s.py; read by src/poem/rhyme.rs.\n"
    )
    OUT.write_text(header + "\n".join(pairs) + "\n", encoding="utf-8")
    print(f"{len(pairs)} pairs -> {OUT}")


if __name__ == "__main__":
    main()
