"""CT-Net (content transfer): source parsing S0, target parsing S1 (one-hot) and source image I0
-> the target image (tanh, RGB), plus the reference's feature lists.

State-dict compatible with the authors' ``ct.pth`` (the aliased output conv and the unused
``encoder4_conv4`` included). Everything before the flow warps depends on (S0, I0) only:
:meth:`CTNet.encode_source` runs once per identity and :meth:`CTNet.decode` per target parsing;
``forward`` (the reference signature) composes the two.

Quirk ``ct-mask-broadcast``: the reference multiplies a (B, h, w) label mask into (B, C, h, w)
features, which only broadcasts correctly at batch 1; here the mask is (B, 1, h, w), so a batch
of N equals N runs of batch 1 (tests prove it).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BlockBottle, BlockEncoder, OutputHead, ResBlockDecoder, bilinear_warp, broadcast_batch, sobel_magnitude

CLOTH_LABELS = (4, 5)            # quirk ct-cloth-labels
BODY_LABELS = (0, 1, 2, 3, 6)
#: source-stage outputs of CT-Net, in order (see encode_source)
SOURCE_FEATURES = ("s0_enc_2", "s0_enc_3", "s0_enc_4", "body_enc_2", "cloth_enc_2", "cloth_grad_enc_2", "style_code")


def _encoders(module: nn.Module, prefix: str, cin: int, ngf: int, count: int = 4) -> None:
    widths = [(cin, ngf * 2, ngf), (ngf * 2, ngf * 4, ngf * 4), (ngf * 4, ngf * 8, ngf * 8), (ngf * 8, ngf * 16, ngf * 16)]
    for i in range(count):
        module.add_module(f"{prefix}_conv{i + 1}", BlockEncoder(*widths[i]))


class CTNet(nn.Module):
    def __init__(self, classes: int = 7, ngf: int = 16):
        super().__init__()
        _encoders(self, "encoder1", classes, ngf)
        self.sg_out_2 = nn.Sequential(nn.Conv2d(ngf * 8, ngf, 3, 1, 1))
        self.sg_out_3 = nn.Sequential(nn.Conv2d(ngf * 16, ngf, 3, 1, 1))
        self.sg_out_4 = nn.Sequential(nn.Conv2d(ngf * 32, ngf, 3, 1, 1))
        self.flow_out = nn.Sequential(nn.Conv2d(ngf, 2, 3, 1, 1), nn.Tanh())     # quirk flow-shared-tanh
        self.occ_mask = nn.Sequential(nn.Conv2d(ngf, 1, 3, 1, 1), nn.Sigmoid())
        _encoders(self, "encoder2", 3, ngf)
        self.bottle_neck1 = BlockBottle(ngf * 20, ngf * 16)
        self.bottle_neck2 = BlockBottle(ngf * 20, ngf * 16)
        self.decoder2_conv1 = ResBlockDecoder(ngf * 16, ngf * 8, ngf * 16)
        self.decoder2_conv2 = ResBlockDecoder(ngf * 16, ngf * 4, ngf * 8)
        self.decoder2_conv3 = ResBlockDecoder(ngf * 8, ngf * 2, ngf * 4)
        self.decoder2_conv4 = ResBlockDecoder(ngf * 4, ngf, ngf * 2)
        self.output = OutputHead(ngf, 3)
        _encoders(self, "encoder3", 3, ngf)
        self.decoder3_conv1 = ResBlockDecoder(ngf * 16, ngf * 8, ngf * 16)
        self.decoder3_conv2 = ResBlockDecoder(ngf * 16, ngf * 4, ngf * 8)
        self.decoder3_conv3 = ResBlockDecoder(ngf * 8, ngf * 2, ngf * 4)
        _encoders(self, "encoder4", 1, ngf)     # quirk ct-dead-encoder: encoder4_conv4 is never used
        self.style_conv1 = BlockEncoder(classes, ngf * 2, ngf)
        self.style_conv2 = BlockEncoder(ngf * 2, ngf * 4, ngf * 4)

    def _parsing_features(self, parsing: torch.Tensor) -> List[torch.Tensor]:
        e1 = self.encoder1_conv1(parsing)
        e2 = self.encoder1_conv2(e1)
        e3 = self.encoder1_conv3(e2)
        return [e2, e3, self.encoder1_conv4(e3)]

    def encode_source(self, sg0: torch.Tensor, img1: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Everything that depends on the source only (names in :data:`SOURCE_FEATURES`), plus
        ``cloth_gradient`` (the Sobel map, for debugging)."""
        s0_enc_2, s0_enc_3, s0_enc_4 = self._parsing_features(sg0)
        cloth_img = (sg0[:, 4] + sg0[:, 5]).unsqueeze(1) * img1
        cloth_gradient = sobel_magnitude(cloth_img)
        cloth_grad_enc_2 = self.encoder4_conv2(self.encoder4_conv1(cloth_gradient))
        cloth_enc_2 = self.encoder3_conv2(self.encoder3_conv1(cloth_img))
        body_mask = (sg0[:, 0] + sg0[:, 1] + sg0[:, 2] + sg0[:, 3] + sg0[:, 6]).unsqueeze(1)
        body_enc_2 = self.encoder2_conv2(self.encoder2_conv1(body_mask * img1))
        # quirk ct-style-code: nearest-resized S0, plain global means per label, labels
        # [0, 1, 2, 3, 6] on the body features then [4, 5] on the cloth features
        labels = F.interpolate(sg0, size=body_enc_2.shape[-2:], mode="nearest")
        codes = [F.adaptive_avg_pool2d(labels[:, k:k + 1] * body_enc_2, 1).flatten(1) for k in BODY_LABELS]
        codes += [F.adaptive_avg_pool2d(labels[:, k:k + 1] * cloth_enc_2, 1).flatten(1) for k in CLOTH_LABELS]
        return {"s0_enc_2": s0_enc_2, "s0_enc_3": s0_enc_3, "s0_enc_4": s0_enc_4, "body_enc_2": body_enc_2,
                "cloth_enc_2": cloth_enc_2, "cloth_grad_enc_2": cloth_grad_enc_2,
                "style_code": torch.stack(codes, dim=1), "cloth_gradient": cloth_gradient}

    def _flow(self, head: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        reduced = head(torch.cat([broadcast_batch(s0, s1), s1], 1))
        return self.flow_out(reduced), reduced

    def decode(self, source: Dict[str, torch.Tensor], sg1: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Source features (batch 1 or B) + target one-hot parsing (B, 7, H, W) -> ``image`` (B, 3, H, W)
        in [-1, 1] RGB, and the intermediates the fixtures hold."""
        s1_enc_2, s1_enc_3, s1_enc_4 = self._parsing_features(sg1)
        flow2, reduced2 = self._flow(self.sg_out_2, source["s0_enc_2"], s1_enc_2)
        occ_mask = self.occ_mask(reduced2)
        flow3, _ = self._flow(self.sg_out_3, source["s0_enc_3"], s1_enc_3)
        flow4, _ = self._flow(self.sg_out_4, source["s0_enc_4"], s1_enc_4)

        grad_2w = bilinear_warp(source["cloth_grad_enc_2"], flow2)
        grad_3w = bilinear_warp(self.encoder4_conv3(grad_2w), flow3)

        cloth_2w = bilinear_warp(source["cloth_enc_2"], flow2)
        cloth_3w = bilinear_warp(self.encoder3_conv3(cloth_2w), flow3)
        cloth_4w = bilinear_warp(self.encoder3_conv4(cloth_3w), flow4)
        cloth_dec_1 = self.decoder3_conv1(cloth_4w)
        # quirk ct-gradient-add: the Sobel-branch features go into both halves of each concat
        cloth_dec_2 = self.decoder3_conv2(torch.cat([cloth_dec_1 + grad_3w, cloth_3w + grad_3w], 1))
        cloth_dec_3 = self.decoder3_conv3(torch.cat([cloth_dec_2 + grad_2w, cloth_2w + grad_2w], 1))

        body_2w = bilinear_warp(source["body_enc_2"], flow2)
        body_3w = bilinear_warp(self.encoder2_conv3(body_2w), flow3)
        body_4w = bilinear_warp(self.encoder2_conv4(body_3w), flow4)

        # code @ s1_enc_2 per pixel; einsum keeps NCHW, so no reshape hides the channel count from ONNX
        spatial_style = torch.einsum("bkc,bchw->bkhw", source["style_code"], s1_enc_2)
        style = self.style_conv2(self.style_conv1(spatial_style * (1 - occ_mask)))
        body = self.bottle_neck1(torch.cat([style, body_4w], 1))
        body = self.bottle_neck2(torch.cat([style, body], 1))
        body = self.decoder2_conv2(torch.cat([self.decoder2_conv1(body), cloth_dec_1], 1))
        body = self.decoder2_conv3(torch.cat([body, cloth_dec_2], 1))
        body = self.decoder2_conv4(torch.cat([body, cloth_dec_3], 1))
        return {"image": self.output(body), "s1_enc_3": s1_enc_3, "s1_enc_4": s1_enc_4,
                "flow_0": flow2, "flow_1": flow3, "flow_2": flow4, "occ_mask": occ_mask}

    def forward(self, sg0: torch.Tensor, sg1: torch.Tensor, img1: torch.Tensor):
        """The reference call ``ct_net(s0, st_map, i0)`` -> (image, [s0_enc_2, s1_enc_3, s1_enc_4],
        [s0_enc_2/3/4 warped by the flows]) (quirk ct-s1-feature-0: the first list starts with s0_enc_2)."""
        source = self.encode_source(sg0, img1)
        out = self.decode(source, sg1)
        s0 = [source["s0_enc_2"], source["s0_enc_3"], source["s0_enc_4"]]
        warped = [bilinear_warp(f, out[f"flow_{i}"]) for i, f in enumerate(s0)]
        return out["image"], [s0[0], out["s1_enc_3"], out["s1_enc_4"]], warped
