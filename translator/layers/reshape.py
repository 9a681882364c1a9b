"""Emitters that move elements between axes or cut blobs: Reshape, Flatten, Permute, Slice, Crop, Tile."""

from __future__ import annotations

import math

from ..ir import Layout, Shape, Tensor, identity
from .common import caffe_axis, keras_axis, slice_call
from .context import LayerContext
from .registry import layer


def _groups(src: Shape, dst: Shape) -> list[tuple[list[int], list[int]]]:
    """Pair runs of input axes with runs of output axes that hold the same elements.

    Axes of size 1 are left out: they can be dropped or inserted anywhere without moving data.
    Both shapes must be fully known and of equal element count.
    """
    ins = [i for i, d in enumerate(src) if d != 1]
    outs = [j for j, d in enumerate(dst) if d != 1]
    groups, a, b = [], 0, 0
    while a < len(ins):
        group_in, group_out = [ins[a]], [outs[b]]
        size_in, size_out = src[ins[a]], dst[outs[b]]
        a, b = a + 1, b + 1
        while size_in != size_out:
            if size_in < size_out:
                group_in.append(ins[a])
                size_in *= src[ins[a]]
                a += 1
            else:
                group_out.append(outs[b])
                size_out *= dst[outs[b]]
                b += 1
        groups.append((group_in, group_out))
    return groups


def _reshaped_layout(src: Shape, layout: Layout, dst: Shape) -> Layout | None:
    """The layout of ``dst`` if a reshape in Keras' own element order gives Caffe's result, else None.

    That holds when each run of Caffe axes that merges or splits sits together, in Caffe's order,
    among the Keras axes: then the Keras reshape only renames axes within each run.
    """
    if any(d is None for d in (*src, *dst)):
        return None
    order = [a for a in layout if src[a] != 1]
    by_first = {g[0][0]: g for g in _groups(src, dst)}
    new: list[int] = []
    pos = 0
    while pos < len(order):
        group = by_first.get(order[pos])
        if group is None or order[pos : pos + len(group[0])] != group[0]:
            return None
        new += group[1]
        pos += len(group[0])
    for j, d in enumerate(dst):
        if d == 1:
            new.insert(new.index(j - 1) + 1 if j else 0, j)
    return tuple(new) if new[0] == 0 else None


def _emit_reshape(
    ctx: LayerContext, x: Tensor, shape: Shape, inferred: int | None = None, literal: frozenset[int] = frozenset()
) -> None:
    """Give top 0 the Caffe ``shape`` by reshaping ``x``, keeping its layout where the data allows.

    ``inferred`` is the axis Caffe infers (its -1), ``literal`` the axes the prototxt sizes: when every
    other output axis is one of those and Keras' order is Caffe's, Keras infers it too, at any input size.
    """
    src, src_layout = x.flat_of if x.flat_of is not None else (x.shape, x.layout)
    new_layout = _reshaped_layout(src, src_layout, shape)
    if new_layout is None:
        x = ctx.in_layout(x, identity(x.rank))
        new_layout = identity(len(shape))
    dims = [shape[a] for a in new_layout]
    # The layout and the dims were found at the translated size; they hold at every size only for a
    # flatten in Caffe's order, or a reshape that keeps Caffe's own -1 (below).
    generic = (len(shape) == 2 and shape[0] == x.shape[0] and x.in_caffe_order) or (
        inferred
        and x.in_caffe_order
        and new_layout == identity(len(shape))
        and literal | {0, inferred} >= set(range(len(shape)))
    )
    if not generic:
        ctx.fixed_size(x)
    if shape[0] != x.shape[0]:
        # Caffe's batch is one more axis; Keras' Reshape cannot touch it. The batch is what is left.
        if None in dims[1:]:
            raise ctx.error(f"a reshape across the batch axis needs fixed sizes, got {list(shape)}")
        helper = ctx.helper("BatchReshape")
        target, producer = ctx.call(helper, tuple(dims[1:]), inputs=x)
    elif len(shape) == 2:
        target, producer = ctx.call("layers.Flatten", inputs=x)
    else:
        if generic and inferred:  # neither None nor the batch axis
            dims[inferred] = None
        if dims[1:].count(None) > 1:
            raise ctx.error(f"cannot reshape to {list(shape)} with more than one free size (fix the input size)")
        target, producer = ctx.call("layers.Reshape", tuple(-1 if d is None else d for d in dims[1:]), inputs=x)
    ctx.output(0, target, producer, shape, new_layout)


def _caffe_reshape(ctx: LayerContext, shape: Shape) -> Shape:
    """Caffe's ReshapeLayer::Reshape: ``dims`` replace axes [axis, axis + num_axes); 0 copies, -1 infers."""
    p = ctx.p.reshape_param
    dims = [int(d) for d in p.shape.dim]
    rank = len(shape)
    start = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= start <= rank:
        raise ctx.error(f"axis {p.axis} is out of range for a {rank}-D blob")
    if p.num_axes < -1:
        raise ctx.error("num_axes must be >= 0, or -1 for all")
    end = rank if p.num_axes == -1 else start + p.num_axes
    if end > rank:
        raise ctx.error(f"axis {p.axis} + num_axes {p.num_axes} is out of range for a {rank}-D blob")
    if any(d < -1 for d in dims) or dims.count(-1) > 1:
        raise ctx.error(f"shape {dims}: dims must be positive, 0 (copy) or a single -1 (infer)")
    out: list[int | None] = [*shape[:start], *dims, *shape[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                raise ctx.error(f"shape {dims} has a 0 at axis {start + i}, but the input has no axis to copy")
            out[start + i] = shape[start + i]
    if -1 in dims:
        i = start + dims.index(-1)
        others = out[:i] + out[i + 1 :]
        if None in shape or None in others:
            out[i] = None
        else:
            known = math.prod(others)
            if known == 0 or math.prod(shape) % known:
                raise ctx.error(f"{list(shape)} cannot be reshaped to {dims}: the count does not divide")
            out[i] = math.prod(shape) // known
    if None not in shape and None not in out and math.prod(out) != math.prod(shape):
        raise ctx.error(f"{list(shape)} ({math.prod(shape)} elements) cannot be reshaped to {out}")
    return tuple(out)


@layer("Reshape")
def reshape(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    shape = _caffe_reshape(ctx, ctx.x.shape)
    if shape == ctx.x.shape:
        ctx.alias(0, ctx.x)
        return
    p = ctx.p.reshape_param
    dims = list(p.shape.dim)
    start = p.axis if p.axis >= 0 else ctx.x.rank + p.axis + 1
    literal = frozenset(start + i for i, d in enumerate(dims) if d > 0)
    _emit_reshape(ctx, ctx.x, shape, start + dims.index(-1) if -1 in dims else None, literal)


@layer("Flatten")
def flatten(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.flatten_param
    x = ctx.x
    start = caffe_axis(p.axis, x.rank)
    end = caffe_axis(p.end_axis, x.rank, "end_axis")
    if end < start:
        raise ctx.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
    if start == end:
        ctx.alias(0, x)
        return
    merged = x.shape[start : end + 1]
    size = None if None in merged else math.prod(merged)
    shape = (*x.shape[:start], size, *x.shape[end + 1 :])
    src, src_layout = x.flat_of if x.flat_of is not None else (x.shape, x.layout)
    keeps_layout = _reshaped_layout(src, src_layout, shape) is not None
    is_output = ctx.node.tops[0] in ctx.graph_outputs
    if not keeps_layout and start == 1 and end == x.rank - 1 and x.flat_of is None and not is_output:
        # Keras flattens in its own axis order; remember it so a following InnerProduct permutes
        # its weights instead of the activations being transposed.
        target, producer = ctx.call("layers.Flatten", inputs=x)
        flat_of = None if x.in_caffe_order else (x.shape, x.layout)
        ctx.output(0, target, producer, shape, identity(2), flat_of)
        return
    _emit_reshape(ctx, x, shape)


@layer("Permute")
def permute(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x = ctx.x
    order = [int(a) for a in ctx.p.permute_param.order]
    if any(a >= x.rank for a in order) or len(set(order)) != len(order):
        raise ctx.error(f"order {order} is not a permutation of the axes of a {x.rank}-D blob")
    order += [a for a in range(x.rank) if a not in order]  # unnamed axes follow in their own order
    if order[0] != 0:
        raise ctx.error(f"order {order} moves the batch axis, which a Keras model cannot do")
    if order == list(range(x.rank)):
        ctx.alias(0, x)
        return
    # No data moves: the output is the same Keras tensor with its axes credited to new Caffe axes.
    shape = tuple(x.shape[a] for a in order)
    ctx.output(0, x.var, x.producer, shape, tuple(order.index(a) for a in x.layout))


@layer("Slice")
def slice_(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    p = ctx.p.slice_param
    x = ctx.x
    tops = len(ctx.node.tops)
    if p.HasField("axis") and p.HasField("slice_dim"):
        raise ctx.error("give either axis or slice_dim, not both")
    axis = caffe_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, x.rank)
    size = x.shape[axis]
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != tops - 1:
            raise ctx.error(f"{len(points)} slice_point values for {tops} tops (want {tops - 1})")
        if any(b <= a for a, b in zip([0, *points], points)) or (size is not None and points[-1] >= size):
            raise ctx.error(f"slice_point {points} must increase strictly within the axis size {size}")
    elif tops > 1:
        if size is None or size % tops:
            raise ctx.error(f"{tops} tops do not divide axis {axis} of size {size} evenly")
        points = [size // tops * i for i in range(1, tops)]
    if tops == 1:
        ctx.alias(0, x)
        return
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    if not p.slice_point and axis >= 2:  # equal parts of a spatial axis: of its translated size
        ctx.fixed_size(x)
    k = x.keras_axis(axis)
    # The last part of a spatial axis runs to its end, whatever the input size makes it.
    for i, (start, stop) in enumerate(zip([0, *points], [*points, None if axis >= 2 else size])):
        name = ctx.keras_name if i == 0 else ctx.derived_name(str(i))
        target, producer = slice_call(ctx, x, keras_axis(k, x.rank), start, stop, target=ctx.top_var(i), name=name)
        shape = list(x.shape)
        end = size if stop is None else stop
        shape[axis] = None if end is None else end - start
        ctx.output(i, target, producer, tuple(shape), x.layout)


@layer("Crop")
def crop(ctx: LayerContext) -> None:
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    x, ref = ctx.inputs
    if x.rank != ref.rank:
        raise ctx.error(f"the reference blob is {ref.rank}-D, the cropped one {x.rank}-D")
    p = ctx.p.crop_param
    axis = caffe_axis(p.axis, x.rank)
    given = [int(v) for v in p.offset]
    if len(given) > 1 and axis + len(given) != x.rank:
        raise ctx.error(f"{len(given)} offsets for the {x.rank - axis} axes from axis {axis}")
    # Every axis from `axis` on takes the reference's size, at one shared offset or its own.
    offsets = {a: (given[a - axis] if len(given) > 1 else given[0] if given else 0) for a in range(axis, x.rank)}
    shape = list(x.shape)
    for a, offset in offsets.items():
        if None not in (x.shape[a], ref.shape[a]) and x.shape[a] - offset < ref.shape[a]:
            raise ctx.error(
                f"cropping axis {a} of size {x.shape[a]} at offset {offset} to {ref.shape[a]} is out of bounds"
            )
        shape[a] = ref.shape[a]
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    # Not Cropping2D: its margins would be those of the translated size. The helper cuts to the
    # reference's actual size.
    ref = ctx.in_layout(ref, x.layout)
    helper = ctx.helper("Crop")
    keras_offsets = tuple(offsets.get(a) for a in x.layout)
    target, producer = ctx.call(helper, keras_offsets, inputs=[x, ref])
    ctx.output(0, target, producer, tuple(shape), x.layout)


@layer("Tile")
def tile(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.tile_param
    x = ctx.x
    axis = caffe_axis(p.axis, x.rank)
    if p.tiles <= 0:
        raise ctx.error("tiles must be positive")
    if p.tiles == 1:
        ctx.alias(0, x)
        return
    if x.flat_of is not None:
        x = ctx.in_layout(x, x.layout)
    # Caffe copies the block of axes from `axis` on; that is concatenation along `axis` alone.
    k = keras_axis(x.keras_axis(axis), x.rank)
    helper = ctx.helper("Tile")
    target, producer = ctx.call(helper, p.tiles, **({"axis": k} if k != -1 else {}), inputs=x)
    shape = list(x.shape)
    shape[axis] = None if shape[axis] is None else shape[axis] * p.tiles
    ctx.output(0, target, producer, tuple(shape), x.layout)
