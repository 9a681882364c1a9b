"""SSD's layers (weiliu89/caffe): Normalize, PriorBox and DetectionOutput, each a helper layer."""

from __future__ import annotations

from .. import layout
from ..ir import channels_last, identity
from ..schema import PriorBoxParameter
from .context import LayerContext
from .registry import layer

CORNER, CENTER_SIZE, CORNER_SIZE = PriorBoxParameter.CORNER, PriorBoxParameter.CENTER_SIZE, PriorBoxParameter.CORNER_SIZE


@layer("Normalize")
def normalize(ctx: LayerContext) -> None:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.p.norm_param
    x = ctx.x
    if x.rank < 2:
        raise ctx.error("Normalize needs a blob with a channel axis")
    x = ctx.in_layout(x, channels_last(x.rank))
    channels = x.shape[1]
    # A shared scale is a 0-d blob in Caffe, otherwise one per channel.
    ctx.expect_blobs(() if p.channel_shared else (channels,))
    kwargs = {}
    if not p.across_spatial:
        kwargs["across_spatial"] = False
    if not p.channel_shared:
        kwargs["channel_shared"] = False
    if p.eps != 1e-10:
        kwargs["epsilon"] = p.eps
    target, producer = ctx.call(ctx.helper("L2Normalization"), inputs=x, **kwargs)
    ctx.weight(producer, "scale", lambda b: layout.vector(b[0]))
    ctx.output(0, target, producer, x.shape, x.layout)


def _prior_sizes(ctx: LayerContext, p) -> dict:
    """PriorBox's arguments, checked as weiliu89's PriorBoxLayer::LayerSetUp does."""
    has = p.HasField
    if not p.min_size or min(p.min_size) <= 0:
        raise ctx.error("min_size must be given and positive")
    if p.max_size and (len(p.max_size) != len(p.min_size) or any(a <= b for a, b in zip(p.max_size, p.min_size))):
        raise ctx.error("max_size needs one value per min_size, each greater than it")
    if len(p.variance) not in (0, 1, 4) or any(v <= 0 for v in p.variance):
        raise ctx.error("variance takes 1 or 4 positive values")
    if (has("img_h") or has("img_w")) and has("img_size") or (has("step_h") or has("step_w")) and has("step"):
        raise ctx.error("give img_size or img_h/img_w, and step or step_h/step_w, not both")
    kwargs = {"min_size": [float(v) for v in p.min_size]}
    if p.max_size:
        kwargs["max_size"] = [float(v) for v in p.max_size]
    if p.aspect_ratio:
        kwargs["aspect_ratio"] = [float(v) for v in p.aspect_ratio]
    if not p.flip:
        kwargs["flip"] = False
    if p.clip:
        kwargs["clip"] = True
    variance = [float(v) for v in p.variance] or [0.1]
    if variance != [0.1]:
        kwargs["variance"] = variance
    image = (p.img_h, p.img_w) if has("img_h") or has("img_w") else (p.img_size, p.img_size) if has("img_size") else None
    step = (p.step_h, p.step_w) if has("step_h") or has("step_w") else (p.step, p.step) if has("step") else None
    if image is not None:
        if min(image) <= 0:
            raise ctx.error("img_size (img_h, img_w) must be positive")
        kwargs["image_size"] = image
    if step is not None:
        if min(step) <= 0:
            raise ctx.error("step (step_h, step_w) must be positive")
        kwargs["step"] = tuple(float(s) for s in step)
    if p.offset != 0.5:
        kwargs["offset"] = p.offset
    return kwargs


def _num_priors(p) -> int:
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios += [ar, 1.0 / ar] if p.flip else [ar]
    return len(ratios) * len(p.min_size) + len(p.max_size)


@layer("PriorBox")
def prior_box(ctx: LayerContext) -> None:
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    p = ctx.p.prior_box_param
    feature, image = ctx.inputs
    if feature.rank != 4 or image.rank != 4:
        raise ctx.error("PriorBox needs a 4-D feature map and a 4-D image")
    kwargs = _prior_sizes(ctx, p)
    feature = ctx.in_layout(feature, channels_last(4))
    image = ctx.in_layout(image, channels_last(4))
    height, width = feature.shape[2:]
    count = None if height is None or width is None else height * width * _num_priors(p) * 4
    target, producer = ctx.call(ctx.helper("PriorBox"), inputs=[feature, image], **kwargs)
    ctx.output(0, target, producer, (1, 2, count), identity(3))


@layer("DetectionOutput")
def detection_output(ctx: LayerContext) -> None:
    ctx.need_bottoms(3)
    ctx.need_tops(1)
    p = ctx.p.detection_output_param
    if not p.HasField("num_classes") or p.num_classes < 1:
        raise ctx.error("num_classes must be given")
    if p.code_type not in (CORNER, CENTER_SIZE, CORNER_SIZE):
        raise ctx.error(f"unknown code_type {p.code_type}")
    nms = p.nms_param
    if nms.nms_threshold < 0 or not 0 < nms.eta <= 1:
        raise ctx.error("nms_threshold must be non-negative and eta in (0, 1]")
    if p.visualize or p.save_output_param.output_directory:
        raise ctx.error("visualize and save_output_param write files; not supported")
    # Caffe reads loc and conf as flat (N, priors * ...) rows in its own element order.
    loc, conf, priors = (ctx.in_layout(t, identity(t.rank)) for t in ctx.inputs)
    _check_counts(ctx, p, loc, conf, priors)
    kwargs = {"num_classes": p.num_classes}
    if not p.share_location:
        kwargs["share_location"] = False
    if p.background_label_id != 0:
        kwargs["background_label_id"] = p.background_label_id
    if p.code_type != CORNER:
        kwargs["code_type"] = {CENTER_SIZE: "center_size", CORNER_SIZE: "corner_size"}[p.code_type]
    if p.variance_encoded_in_target:
        kwargs["variance_encoded_in_target"] = True
    if p.HasField("confidence_threshold"):
        kwargs["confidence_threshold"] = p.confidence_threshold
    if nms.nms_threshold != 0.3:
        kwargs["nms_threshold"] = nms.nms_threshold
    if nms.HasField("top_k"):
        kwargs["top_k"] = nms.top_k
    if nms.eta != 1:
        kwargs["eta"] = nms.eta
    if p.keep_top_k != -1:
        kwargs["keep_top_k"] = p.keep_top_k
    ctx.comment(f"{ctx.node.name}: (1, 1, detections, 7) rows [image, label, score, xmin, ymin, xmax, ymax]")
    target, producer = ctx.call(ctx.helper("DetectionOutput"), inputs=[loc, conf, priors], **kwargs)
    ctx.output(0, target, producer, (1, 1, None, 7), identity(4))


def _check_counts(ctx, p, loc, conf, priors) -> None:
    """DetectionOutputLayer::Reshape's checks: one loc box and one score per class for every prior."""
    count = priors.shape[2] if priors.rank == 3 else None
    if count is None or loc.rank < 2 or conf.rank < 2:
        return
    if count % 4:
        raise ctx.error(f"{ctx.source_of(2)} holds {count} values, not 4 per prior box")
    boxes = count // 4
    loc_classes = 1 if p.share_location else p.num_classes
    for i, tensor, want, what in (
        (0, loc, boxes * loc_classes * 4, f"{loc_classes * 4} location values"),
        (1, conf, boxes * p.num_classes, f"{p.num_classes} class scores"),
    ):
        if tensor.shape[1] is not None and tensor.shape[1] != want:
            raise ctx.error(
                f"{ctx.source_of(2)} holds {boxes} prior boxes, but {ctx.source_of(i)} has {tensor.shape[1]} "
                f"values per image where {boxes} boxes of {what} need {want}"
            )
