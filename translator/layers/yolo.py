"""YOLO output emitters of MobileNet-YOLO (eric612): YoloDetectionOutput and Yolov3DetectionOutput, one helper layer."""

from __future__ import annotations

from ..ir import Tensor, channels_last, identity
from .context import LayerContext
from .registry import layer


def _maps(ctx: LayerContext, boxes: int, classes: int) -> list[Tensor]:
    """The prediction maps, channels last, each checked as the fork indexes it."""
    maps = []
    for i, x in enumerate(ctx.inputs):
        if x.rank != 4:
            raise ctx.error(f"{ctx.source_of(i)} is {x.rank}-D; {ctx.node.type} needs 4-D prediction maps")
        channels, height, width = x.shape[1:]
        if channels is not None and channels != boxes * (5 + classes):
            raise ctx.error(
                f"{ctx.source_of(i)} has {channels} channels; {boxes} boxes of 4 coordinates, objectness "
                f"and {classes} class scores need {boxes * (5 + classes)}"
            )
        # The fork walks a side x side grid with side = the map's width.
        if height is not None and width is not None and height != width:
            raise ctx.error(f"{ctx.source_of(i)} is {height}x{width}; the fork reads square maps only")
        maps.append(ctx.in_layout(x, channels_last(4)))
    return maps


def _emit(ctx: LayerContext, maps: list[Tensor], **kwargs: object) -> None:
    ctx.comment(f"{ctx.node.name}: (1, 1, detections, 7) rows [0, label, score, xmin, ymin, xmax, ymax]")
    target, producer = ctx.call(ctx.helper("YoloDetectionOutput"), inputs=maps, **kwargs)
    ctx.output(0, target, producer, (1, 1, None, 7), identity(4))


def _thresholds(ctx: LayerContext, p) -> dict:
    if not 0 <= p.nms_threshold <= 1:
        raise ctx.error(f"nms_threshold must be in [0, 1], got {p.nms_threshold}")
    return {"confidence_threshold": p.confidence_threshold, "nms_threshold": p.nms_threshold}


@layer("YoloDetectionOutput")
def yolo_detection_output(ctx: LayerContext) -> None:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.p.yolo_detection_output_param
    if p.coords != 4:
        raise ctx.error(f"coords: {p.coords} is not supported; the fork decodes 4 box coordinates")
    if p.num_classes < 1 or p.num_box < 1:
        raise ctx.error("num_classes and num_box must be positive")
    if len(p.biases) < 2 * p.num_box:
        raise ctx.error(f"biases needs a width and a height for each of the {p.num_box} boxes, got {len(p.biases)} values")
    maps = _maps(ctx, p.num_box, p.num_classes)
    # Both scales of a two-bottom net use the same biases, in grid cells.
    anchors = [[float(p.biases[2 * n]), float(p.biases[2 * n + 1])] for n in range(p.num_box)]
    _emit(
        ctx,
        maps,
        version=2,
        num_classes=p.num_classes,
        anchors=[anchors] * len(maps),
        scales=[1] * len(maps),
        **_thresholds(ctx, p),
    )


@layer("Yolov3DetectionOutput")
def yolov3_detection_output(ctx: LayerContext) -> None:
    ctx.need_tops(1)
    p = ctx.p.yolov3_detection_output_param
    scales = len(ctx.inputs)
    if not scales:
        raise ctx.error("takes one bottom per scale, got none")
    if p.num_classes < 1 or p.num_box < 1:
        raise ctx.error("num_classes and num_box must be positive")
    if p.mask_group_num != scales:
        raise ctx.error(f"mask_group_num is {p.mask_group_num} but the layer has {scales} bottoms; they must agree")
    if len(p.anchors_scale) < scales or any(s <= 0 for s in p.anchors_scale[:scales]):
        raise ctx.error(f"anchors_scale needs a positive input-to-map ratio for each of the {scales} bottoms")
    group = len(p.mask) // scales
    if group == 0 or (scales - 1) * group + p.num_box > len(p.mask):
        raise ctx.error(f"mask needs {p.num_box} anchor indices for each of the {scales} bottoms, got {len(p.mask)}")
    # Bottom t reads anchors mask[t * group + n], sized in input pixels: anchors_scale[t] per map cell.
    chosen = [[p.mask[t * group + n] for n in range(p.num_box)] for t in range(scales)]
    if any(2 * m + 1 >= len(p.biases) for row in chosen for m in row):
        raise ctx.error(f"mask refers to an anchor beyond the {len(p.biases) // 2} given in biases")
    maps = _maps(ctx, p.num_box, p.num_classes)
    _emit(
        ctx,
        maps,
        version=3,
        num_classes=p.num_classes,
        anchors=[[[float(p.biases[2 * m]), float(p.biases[2 * m + 1])] for m in row] for row in chosen],
        scales=[int(s) for s in p.anchors_scale[:scales]],
        **_thresholds(ctx, p),
    )
