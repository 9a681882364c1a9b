"""The translator's entry point: prototxt path in, Translation (and module text) out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from translator.emit import Emitter, Options
from translator.ir import Shape, Translation
from translator.normalize import build_graph
from translator.parse import read_prototxt
from translator.render import render


def translate(
    prototxt: str | Path,
    *,
    options: Options = Options(),
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    input_shapes: Mapping[str, Shape] | None = None,
    display: str | None = None,
) -> Translation:
    """Parse, filter and emit one net; raises TranslationError on bad input."""
    parsed = read_prototxt(prototxt, display)
    graph = build_graph(parsed, phase=phase, level=level, stages=stages, input_shapes=input_shapes)
    return Emitter(graph, options, Path(prototxt).name).run()


def translate_to_source(prototxt: str | Path, *, npz_name: str | None = None, **kwargs) -> str:
    """The formatted module text for ``prototxt`` (what ``caffe2py net.prototxt`` prints)."""
    translation = translate(prototxt, **kwargs)
    return render(translation, npz_name or Path(prototxt).with_suffix(".npz").name)
