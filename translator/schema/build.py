"""Compile caffe.proto into the committed descriptor set caffe.desc (``--check``: fail if stale)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

HERE = Path(__file__).resolve().parent
PROTO = HERE / "caffe.proto"
DESC = HERE / "caffe.desc"


def compile_descriptor_set() -> bytes:
    """Run grpc_tools' protoc on caffe.proto and return the serialized FileDescriptorSet."""
    # protoc runs in its own process: in one that has loaded TensorFlow's protobuf it can crash.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "caffe.desc"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "--include_imports",
            f"--descriptor_set_out={out}",
            f"--proto_path={HERE}",
            PROTO.name,
        ]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit status {run.returncode}): {run.stderr.strip()}")
        return out.read_bytes()


def _parse(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def is_current() -> bool:
    """Whether the committed caffe.desc describes exactly what caffe.proto compiles to."""
    if not DESC.is_file():
        return False
    # Compare the parsed protos, not bytes: protoc versions may order or encode them differently.
    return _parse(DESC.read_bytes()) == _parse(compile_descriptor_set())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m caffe2py.schema.build",
        description="Regenerate caffe2py/schema/caffe.desc from caffe.proto.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed caffe.desc is stale",
    )
    args = parser.parse_args(argv)
    if args.check:
        if is_current():
            print(f"{DESC.name} is up to date")
            return 0
        print(f"{DESC.name} is stale: run python -m caffe2py.schema.build", file=sys.stderr)
        return 1
    DESC.write_bytes(compile_descriptor_set())
    print(f"wrote {DESC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
