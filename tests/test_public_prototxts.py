"""Public deploy prototxts from other repositories: each runs with seeded weights, or is refused for its recorded reason.

tests/data/public_prototxts.json lists every net of the set (repository, path, commit, licence, layer types, the
outcome and, for a refusal, why and a regular expression for a distinctive part of the error); the files whose
licence allows it are kept in tests/data/public_prototxts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.refnet import load_module

DATA = Path(__file__).resolve().parent / "data"
FILES = DATA / "public_prototxts"
ENTRIES = json.loads((DATA / "public_prototxts.json").read_text())
STORED = [entry for entry in ENTRIES if entry["stored"]]


def _shapes(entry) -> dict[str, tuple[int, ...]] | None:
    shapes = {
        name: tuple(int(d) for d in dims.split(","))
        for name, dims in entry["input_shapes"].items()
    }
    return shapes or None


def test_the_list_names_where_each_net_comes_from():
    assert len(ENTRIES) >= 35
    assert len({entry["file"] for entry in ENTRIES}) == len(ENTRIES)
    assert len({(entry["repo"], entry["path"]) for entry in ENTRIES}) == len(ENTRIES)
    for entry in ENTRIES:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry["repo"]), entry["file"]
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"]), entry["file"]
        assert entry["path"] and entry["licence"] and entry["layer_types"], entry[
            "file"
        ]
        assert entry["expect"] in ("runs", "refused"), entry["file"]
        if entry["expect"] == "refused":
            assert entry["reason"] and entry["match"], entry["file"]
    for entry in STORED:
        # The copies are the upstream files unchanged: same length as the upstream text.
        assert len((FILES / entry["file"]).read_text()) == entry["chars"], entry["file"]
        assert (FILES / entry["licence_file"]).is_file(), entry["file"]
    kept = {path.name for path in FILES.glob("*.prototxt")}
    assert kept == {entry["file"] for entry in STORED}


def _schema_knows(path: str) -> bool:
    """Whether the dotted field path (from a layer) names fields of the schema."""
    from caffe2py import schema

    descriptor = schema.LayerParameter.DESCRIPTOR
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part) if descriptor is not None else None
        if field is None:
            return False
        descriptor = field.message_type
    return True


def test_each_record_states_what_the_translator_does_now():
    """A record's error names only types and fields still unsupported, so a record gone stale fails."""
    from caffe2py.layers import supported_types

    supported = set(supported_types())
    stale = []
    for entry in ENTRIES:
        assert (entry["outcome"] == "runs") == (entry["expect"] == "runs"), entry["file"]
        error = entry.get("error", "")
        if entry["expect"] == "refused":
            assert re.search(entry["match"], error), f"{entry['file']}: match does not find the recorded error"
        stale += [f"{entry['file']}: type {kind}" for kind in re.findall(r"of type '([^']+)'", error) if kind in supported]
        stale += [f"{entry['file']}: field {path}" for path in re.findall(r"unknown field '([\w.]+)'", error) if _schema_knows(path)]
    assert not stale, f"records that name as unsupported what is supported now: {sorted(set(stale))}"


def _translate(entry):
    from caffe2py.convert import translate
    from caffe2py.options import Options

    options = dict(entry["options"])
    flags = {key: options.pop(key) for key in list(options) if key in Options.__dataclass_fields__}
    return translate(FILES / entry["file"], options=Options(**flags), input_shapes=_shapes(entry), **options)


@pytest.mark.parametrize("entry", STORED, ids=[entry["file"] for entry in STORED])
def test_public_prototxt(entry):
    from caffe2py.errors import TranslationError
    from caffe2py.render import render

    if entry["expect"] == "refused":
        with pytest.raises(TranslationError) as info:
            _translate(entry)
        assert re.search(entry["match"], str(info.value)), str(info.value)
        return
    source = render(_translate(entry))
    if "test_translates_only" in entry:
        compile(source, entry["file"], "exec")
        return
    import keras

    module = load_module(source)
    keras.utils.set_random_seed(0)
    model = module.build_model()
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal((1, *tensor.shape[1:])).astype("float32")
        for tensor in model.inputs
    ]
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    for output in outputs if isinstance(outputs, list) else [outputs]:
        assert output.size and np.isfinite(output).all(), entry["file"]
