"""PSC's three training objectives (``network/*_Net.py``, ``*_Train.forward`` in the reference).

Each is an nn.Module whose ``forward`` runs every net call of one reference step and returns
the loss terms (already weighted) and ``total``, so DDP sees one forward and one backward per
step. Views are indexed right, front, left, back = 0..3 and mid0..mid3 = 4..7; key view v and
v + 1 (mod 4) are neighbours and mid v lies between them.

* pm: PM-Net predicts the two in-between poses of each neighbour pair from the pair and t:
  ``10 L1 + 30 L2`` to the true maps, ``1.5`` x L1 between predictions at t and at t perturbed
  by up to +-0.01 (one draw per pose, clamped to [0, 1]), and ``0.35`` x a finite-difference
  consistency term along key -> in-between -> in-between -> key, with the reference's step
  denominators ``1 - t_a``, ``t_a + 1 - t_b`` and ``t_b``. Each term averages its 8 poses.
* aa: AA-Net predicts view v + 1's parsing from view v's parsing and v + 1's pose, the reverse,
  and mid v from either key view: ``8 L1`` on one-hot maps and ``0.5`` x weighted cross-entropy
  (label weights 1, 10, 20, 10, 1, 1, 10), both summed over the 16 predictions and divided by 4.
  As in the reference the cross-entropy takes AA-Net's softmax output as its logits.
* ct: CT-Net renders view v + 1 and mid v from (parsing v, target parsing, image v):
  ``2 L1 + 0.3 content + 100 style + 300 face + 30 cloth + 5 flow`` summed over the 8 renders
  and divided by 4. Content/style: VGG19 relu1_1..relu4_1 (L1 of features; L1 of per-sample Gram
  matrices / (C H W)), fed the [-1, 1] RGB images as the reference does. Face/cloth: MSE inside
  label 2 / labels 4 + 5 of the target parsing. Flow: L1 between the target-parsing features and
  the flow-warped source features at three scales. The reference also computes a Sobel term on
  the clothes but leaves it out of the total; here it is ``cloth_grad`` with weight 0 by default.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..models.psc import AANet, CTNet, PMNet
from ..models.psc.blocks import sobel_magnitude
from ..models.psc.ops import PoseHeatmaps, one_hot
from .vgg import VGG19Features

CE_WEIGHTS = (1.0, 10.0, 20.0, 10.0, 1.0, 1.0, 10.0)
NEXT = (1, 2, 3, 0)
FACE_LABEL = 2
CLOTH_LABELS = (4, 5)


def pose_maps(heatmaps: PoseHeatmaps, keypoints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, P, 18, 2) keypoints -> (B, P, 18, H, W) maps."""
    b, p = keypoints.shape[:2]
    maps = heatmaps(keypoints.flatten(0, 1), valid.flatten(0, 1))
    return maps.view(b, p, *maps.shape[1:])


class PMObjective(nn.Module):
    def __init__(self, net: PMNet, heatmaps: PoseHeatmaps, w: Dict[str, float]):
        super().__init__()
        self.net, self.heatmaps, self.w = net, heatmaps, w

    def predict(self, maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The 8 in-between poses (B, 8, 18, H, W): pose 2n + k from key views n, n + 1 at t[:, 2n + k]."""
        b = maps.shape[0]
        first = maps[:, [0, 0, 1, 1, 2, 2, 3, 3]].flatten(0, 1)
        second = maps[:, [1, 1, 2, 2, 3, 3, 0, 0]].flatten(0, 1)
        out = self.net(first, second, t.reshape(-1))      # instance norms only: batching is exact
        return out.view(b, 8, *out.shape[1:])

    def forward(self, keypoints, valid, t, perturbation) -> Dict[str, torch.Tensor]:
        maps = pose_maps(self.heatmaps, keypoints, valid)          # (B, 12, 18, H, W)
        key, between = maps[:, :4], maps[:, 4:]
        pred = self.predict(key, t)
        l1 = F.l1_loss(pred, between)
        l2 = F.mse_loss(pred, between)
        pred_perturbed = self.predict(key, torch.clamp(t + perturbation, 0.0, 1.0))
        tur = F.l1_loss(pred, pred_perturbed)
        grad = pred.new_zeros(())
        for n in range(4):
            t_a = t[:, 2 * n].view(-1, 1, 1, 1)
            t_b = t[:, 2 * n + 1].view(-1, 1, 1, 1)
            g1 = (key[:, n] - pred[:, 2 * n]) / (1 - t_a)
            g2 = (pred[:, 2 * n] - pred[:, 2 * n + 1]) / (t_a + 1 - t_b)
            g3 = (pred[:, 2 * n + 1] - key[:, NEXT[n]]) / t_b
            grad = grad + F.l1_loss(g2, g1) + F.l1_loss(g3, g2)
        terms = {"l1": self.w["l1"] * l1, "l2": self.w["l2"] * l2, "grad": self.w["grad"] * grad / 8,
                 "perturbation": self.w["perturbation"] * tur}
        terms["total"] = sum(terms.values())
        self.preview = (key[:, 0], between[:, 0], pred[:, 0])
        return terms


class AAObjective(nn.Module):
    def __init__(self, net: AANet, heatmaps: PoseHeatmaps, w: Dict[str, float]):
        super().__init__()
        self.net, self.heatmaps, self.w = net, heatmaps, w
        self.register_buffer("ce_weight", torch.tensor(CE_WEIGHTS), persistent=False)

    def forward(self, keypoints, valid, labels) -> Dict[str, torch.Tensor]:
        maps = pose_maps(self.heatmaps, keypoints, valid)          # (B, 8, 18, H, W)
        parsing = one_hot(labels.flatten(0, 1), len(CE_WEIGHTS)).view(*labels.shape[:2], len(CE_WEIGHTS),
                                                                         *labels.shape[2:])
        # (source parsing view, pose view, target view): v -> v+1, v+1 -> v, v -> mid v, v+1 -> mid v
        calls = ([(v, NEXT[v], NEXT[v]) for v in range(4)] + [(NEXT[v], v, v) for v in range(4)]
                 + [(v, 4 + v, 4 + v) for v in range(4)] + [(NEXT[v], 4 + v, 4 + v) for v in range(4)])
        l1 = parsing.new_zeros(())
        ce = parsing.new_zeros(())
        self.preview = None
        for source, pose, target in calls:
            pred = self.net(parsing[:, source], maps[:, pose])
            l1 = l1 + F.l1_loss(pred, parsing[:, target])
            ce = ce + F.cross_entropy(pred, labels[:, target], weight=self.ce_weight)
            if self.preview is None:
                self.preview = (labels[:, source], labels[:, target], pred.detach().argmax(1))
        terms = {"l1": self.w["l1"] * l1 / 4, "ce": self.w["ce"] * ce / 4}
        terms["total"] = terms["l1"] + terms["ce"]
        return terms


def gram_per_sample(features: torch.Tensor) -> torch.Tensor:
    """(B, C, C) Gram matrices / (C H W), as the reference's ``compute_gram``."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    return flat @ flat.transpose(1, 2) / (c * h * w)


class CTObjective(nn.Module):
    def __init__(self, net: CTNet, vgg: Optional[VGG19Features], w: Dict[str, float]):
        super().__init__()
        self.net, self.vgg, self.w = net, vgg, w

    def _vgg_terms(self, pred: torch.Tensor, target: torch.Tensor):
        pf = self.vgg(pred)[:4]                      # relu1_1 .. relu4_1
        with torch.no_grad():
            tf = self.vgg(target)[:4]
        content = sum(F.l1_loss(p.float(), t.float()) for p, t in zip(pf, tf))
        style = sum(F.l1_loss(gram_per_sample(p), gram_per_sample(t)) for p, t in zip(pf, tf))
        return content, style

    def forward(self, labels, images) -> Dict[str, torch.Tensor]:
        parsing = one_hot(labels.flatten(0, 1), 7).view(*labels.shape[:2], 7, *labels.shape[2:])
        sums: Dict[str, torch.Tensor] = {k: images.new_zeros(()) for k in
                                         ("l1", "face", "cloth", "cloth_grad", "flow", "content", "style")}
        previews: List[torch.Tensor] = []
        for v in range(4):
            for target in (NEXT[v], 4 + v):          # view v + 1, then mid v
                goal, goal_parsing = images[:, target], parsing[:, target]
                pred, s1_features, s0_warped = self.net(parsing[:, v], goal_parsing, images[:, v])
                sums["flow"] = sums["flow"] + sum(F.l1_loss(a, b) for a, b in zip(s1_features, s0_warped))
                sums["l1"] = sums["l1"] + F.l1_loss(pred, goal)
                face = goal_parsing[:, FACE_LABEL:FACE_LABEL + 1]
                cloth = sum(goal_parsing[:, c:c + 1] for c in CLOTH_LABELS)
                sums["face"] = sums["face"] + F.mse_loss(pred * face, goal * face)
                sums["cloth"] = sums["cloth"] + F.mse_loss(pred * cloth, goal * cloth)
                if self.w["cloth_grad"]:
                    sums["cloth_grad"] = sums["cloth_grad"] + F.l1_loss(sobel_magnitude(pred * cloth),
                                                                        sobel_magnitude(goal * cloth))
                if self.vgg is not None:
                    content, style = self._vgg_terms(pred, goal)
                    sums["content"] = sums["content"] + content
                    sums["style"] = sums["style"] + style
                if not previews:
                    previews = [images[:, v], goal, pred.detach()]
        terms = {k: self.w[k] * v / 4 for k, v in sums.items()
                 if self.w[k] and (self.vgg is not None or k not in ("content", "style"))}
        terms["total"] = sum(terms.values())
        self.preview = tuple(previews)
        return terms
