"""Keep README.md's supported-layer table equal to the registry: `python -m tests.readme_table` rewrites it."""

from __future__ import annotations

import re
from pathlib import Path

from caffe2py.layers import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- layers:start -->\n).*?(<!-- layers:end -->)", re.DOTALL)


def current() -> str:
    return BLOCK.sub(lambda m: f"{m.group(1)}{markdown_table()}\n{m.group(2)}", README.read_text())


if __name__ == "__main__":
    README.write_text(current())
