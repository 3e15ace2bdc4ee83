"""The architecture catalogue: torchvision and timm builds registered under our names, with published figures.

Where torchvision or timm implement an architecture faithfully, the entry builds
theirs (no pretrained weights: nothing is downloaded). Each entry carries the
figures its source publishes (parameters, multiply-adds at the native
resolution) so tests check that what we build is the published network:
the paper's numbers where they are stated precisely enough, else the
torchvision / timm documentation tables (which give both for every model), as
the `source` says. In-house architectures (ShuffleNet v1, DARTS, SPOS, ...)
live in their own modules and register themselves the same way.
"""

from collections.abc import Callable

import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.registry import Published, register

TV_DOCS = "torchvision model docs (weights table)"
TIMM_CARD = "timm model card"


def _external(library: str, model: str, **fixed) -> Callable[..., nn.Module]:
    """A builder for torchvision's or timm's `model` with `fixed` constructor arguments."""

    def build(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, **kwargs) -> nn.Module:
        args = {**fixed, **kwargs}
        if library == "torchvision":
            import torchvision.models as tvm

            if in_chans != 3:
                raise RecipeError(f"model.name: torchvision's {model} takes 3-channel input, the data has "
                                  f"{in_chans}; set data.channels: 3")
            return tvm.get_model(model, weights=None, num_classes=num_classes, **args)
        import timm

        return timm.create_model(model, pretrained=False, num_classes=num_classes, in_chans=in_chans, **args)

    build.__doc__ = f"{library}'s {model}" + (f" ({fixed})" if fixed else "")
    return build


def _add(name: str, family: str, library: str, model: str, description: str, published: Published,
         **fixed) -> None:
    register(name, family, description, published)(_external(library, model, **fixed))


P = Published
NO_AUX = {"aux_logits": False, "init_weights": True}

# ---- classic ---------------------------------------------------------------------------------------------
_add("alexnet", "classic", "torchvision", "alexnet", "AlexNet (Krizhevsky et al. 2012), torchvision's one-GPU form",
     P(61.1, 714, source=TV_DOCS))
_add("vgg16", "classic", "torchvision", "vgg16", "VGG-16 (Simonyan & Zisserman 2014), configuration D",
     P(138.4, 15470, source=TV_DOCS))
_add("googlenet", "classic", "torchvision", "googlenet", "GoogLeNet / Inception-v1 (Szegedy et al. 2014), "
     "no auxiliary heads", P(6.6, 1500, source=TV_DOCS), **NO_AUX)
_add("inception_v3", "classic", "torchvision", "inception_v3", "Inception-v3 (Szegedy et al. 2015), 299 px, "
     "no auxiliary head", P(23.8, 5700, resolution=299, source=TIMM_CARD + " (inception_v3)"), **NO_AUX)
_add("inception_v4", "classic", "timm", "inception_v4", "Inception-v4 (Szegedy et al. 2016), 299 px",
     P(42.7, 12300, resolution=299, source=TIMM_CARD))
for _depth, _params, _macs in ((18, 11.7, 1810), (34, 21.8, 3660), (50, 25.6, 4090), (101, 44.5, 7800),
                               (152, 60.2, 11510)):
    _add(f"resnet{_depth}", "classic", "torchvision", f"resnet{_depth}", f"ResNet-{_depth} (He et al. 2016)",
         P(_params, _macs, source=TV_DOCS + "; the paper's 3.8/7.6/11.3 GFLOPs for 50/101/152 count fewer ops"))
_add("resnext50_32x4d", "classic", "torchvision", "resnext50_32x4d", "ResNeXt-50 32x4d (Xie et al. 2017)",
     P(25.0, 4200, source="Xie et al. 2017, Table 1"))
_add("wide_resnet50_2", "classic", "torchvision", "wide_resnet50_2", "Wide ResNet-50-2 (Zagoruyko & "
     "Komodakis 2016), bottleneck width x2", P(68.9, 11400, source=TV_DOCS))
_add("densenet121", "classic", "torchvision", "densenet121", "DenseNet-121 (Huang et al. 2017), k=32",
     P(8.0, 2830, source=TV_DOCS))
_add("seresnet50", "classic", "timm", "seresnet50", "SE-ResNet-50 (Hu et al. 2018), reduction 16",
     P(28.1, 4100, source="Hu et al. 2018, Table 2 (params); " + TIMM_CARD + " (multiply-adds)"))
_add("xception", "classic", "timm", "legacy_xception", "Xception (Chollet 2017), 299 px",
     P(22.9, 8400, resolution=299, source="Chollet 2017, Table 3 (22,855,952 params); " + TIMM_CARD))
_add("resnet50_dilated", "classic", "torchvision", "resnet50", "dilated ResNet: DRN-A-50 (Yu et al. 2017), "
     "ResNet-50 with stages 4-5 dilated (2, 4) instead of strided, output stride 8",
     P(25.6, None, source="Yu et al. 2017, Table 1 (DRN-A-50: 25.6M, as ResNet-50)"),
     replace_stride_with_dilation=[False, True, True])

# ---- efficient -------------------------------------------------------------------------------------------
_add("mobilenet_v1", "efficient", "timm", "mobilenetv1_100", "MobileNet v1 1.0 (Howard et al. 2017)",
     P(4.2, 569, source="Howard et al. 2017, Table 8"))
_add("mobilenet_v2", "efficient", "torchvision", "mobilenet_v2", "MobileNet v2 1.0 (Sandler et al. 2018)",
     P(3.5, 300, source=TV_DOCS + "; paper Table 4: 3.4M, 300M"))
_add("mobilenet_v3_large", "efficient", "torchvision", "mobilenet_v3_large", "MobileNet v3 Large 1.0 "
     "(Howard et al. 2019)", P(5.5, 219, source=TV_DOCS + " (params); Howard et al. 2019, Table 3 (MAdds)"))
_add("mobilenet_v3_small", "efficient", "torchvision", "mobilenet_v3_small", "MobileNet v3 Small 1.0 "
     "(Howard et al. 2019)", P(2.5, 56, source="Howard et al. 2019, Table 4"))
for _width, _tv, _params, _macs in (("0.5", "x0_5", 1.4, 41), ("1.0", "x1_0", 2.3, 146), ("1.5", "x1_5", 3.5, 299),
                                    ("2.0", "x2_0", 7.4, 591)):
    _add(f"shufflenet_v2_{_tv}", "efficient", "torchvision", f"shufflenet_v2_{_tv}", f"ShuffleNet v2 {_width}x "
         "(Ma et al. 2018)", P(_params, _macs, source="Ma et al. 2018, Table 8 (FLOPs); " + TV_DOCS + " (params)"))

# ---- found by architecture search ------------------------------------------------------------------------
_add("mnasnet_a1", "nas", "timm", "mnasnet_a1", "MnasNet-A1 (Tan et al. 2019), with squeeze-excitation",
     P(3.9, 312, source="Tan et al. 2019, Table 1"))
_add("mnasnet_b1", "nas", "torchvision", "mnasnet1_0", "MnasNet-B1 1.0 (Tan et al. 2019), no squeeze-excitation",
     P(4.4, 310, source=TV_DOCS))
_add("fbnet_c", "nas", "timm", "fbnetc_100", "FBNet-C (Wu et al. 2019)",
     P(5.6, 375, source=TIMM_CARD + " (params); Wu et al. 2019, Table 2 (375M FLOPs)"))
for _b, (_params, _macs, _res) in enumerate(((5.3, 390, 224), (7.8, 700, 240), (9.2, 1000, 260), (12, 1800, 300),
                                             (19, 4390, 380), (30, 10270, 456), (43, 19000, 528), (66, 37000, 600))):
    _source = "Tan & Le 2019, Table 2" + ("" if _b not in (4, 5) else
                                          " (params); " + TV_DOCS + " (multiply-adds; the paper says 4.2B / 9.9B)")
    _add(f"efficientnet_b{_b}", "nas", "torchvision", f"efficientnet_b{_b}", f"EfficientNet-B{_b} (Tan & Le 2019), "
         f"{_res} px", P(_params, _macs, resolution=_res, source=_source))
_add("regnet_x_400mf", "nas", "torchvision", "regnet_x_400mf", "RegNetX-400MF (Radosavovic et al. 2020)",
     P(5.5, 410, source=TV_DOCS))
_add("regnet_y_400mf", "nas", "torchvision", "regnet_y_400mf", "RegNetY-400MF (Radosavovic et al. 2020)",
     P(4.3, 400, source="Radosavovic et al. 2020, Table 4"))
_add("regnet_y_1_6gf", "nas", "torchvision", "regnet_y_1_6gf", "RegNetY-1.6GF (Radosavovic et al. 2020)",
     P(11.2, 1600, source="Radosavovic et al. 2020, Table 4"))
