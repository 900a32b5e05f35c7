"""PM-Net, AA-Net and CT-Net against the reference fixtures (../shared/fixtures/psc), strict
checkpoint loading, and the two batch questions: AA-Net's test-time BatchNorm and CT-Net's mask."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from poserender.errors import UserError
from poserender.models.psc.checkpoint import load_psc_nets, load_strict

from .conftest import CASE_PARAMS, T, grid, need_fixtures, one_case


def _maxdiff(got, want) -> float:
    got = got.detach().numpy() if torch.is_tensor(got) else got
    assert got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want).max())


@pytest.mark.parametrize("i", CASE_PARAMS)
def test_pm_net_matches_fixture(psc_manifest, psc_nets, i):
    pm, _, _ = psc_nets
    case, sample, arrays = one_case(psc_manifest, i)
    if not case["pm_net_run"]:
        pytest.skip("t = 1: the reference does not run PM-Net (pt = p1)")
    with torch.no_grad():
        pt = pm(T(sample["p0"]), T(sample["p1"]), T(arrays["t"]))
    assert _maxdiff(grid(pt, psc_manifest["layout"]["grid_index"]), arrays["pt_grid"]) <= 1e-4
    if "pt" in arrays:
        assert _maxdiff(pt, arrays["pt"]) <= 1e-4


@pytest.mark.parametrize("i", CASE_PARAMS)
def test_aa_net_eval_mode_matches_st(psc_manifest, psc_nets, i):
    from poserender.models.psc.ops import PoseHeatmaps

    aa = copy.deepcopy(psc_nets[1]).set_bn_stats("running")
    case, sample, arrays = one_case(psc_manifest, i)
    xy = T(arrays["pt_peaks_xy"].T[None].copy())
    with torch.no_grad():
        st = aa(T(sample["s0"]), PoseHeatmaps(256, 256)(xy, (xy[..., 0] != -1).float()))
    assert _maxdiff(grid(st, psc_manifest["layout"]["grid_index"]), arrays["st_grid"]) <= 1e-4
    if "st" in arrays:
        assert _maxdiff(st, arrays["st"]) <= 1e-4


@pytest.mark.slow
def test_aa_net_authors_mode_matches_st_trainmode_within_float32_chaos(psc_manifest, psc_nets):
    """The authors' mode (batch statistics, default) against ``st_trainmode``. With these random
    weights the train-mode net amplifies rounding: a 1-ulp change of its input moves the output by
    ~1e-3, and the exact (float64) result differs from the fixture's float32 one by 1.2e-3. So the
    fixture's 1e-4 cannot be met on another CPU; we assert 2e-3 and assert the measured reason."""
    _, aa, _ = psc_nets
    case, sample, arrays = one_case(psc_manifest, 0)
    s0, pt_map = T(sample["s0"]), T(arrays["pt_map"])
    with torch.no_grad():
        st = aa(s0, pt_map)
        assert _maxdiff(st, arrays["st_trainmode"]) <= 2e-3
        exact = copy.deepcopy(aa).double()(s0.double(), pt_map.double())
        assert _maxdiff(exact, arrays["st_trainmode"]) > 5e-4          # the fixture's own rounding error
        nudged = pt_map * (1 + 6e-8 * torch.sign(torch.randn(pt_map.shape, generator=torch.Generator().manual_seed(0))))
        assert float((aa(s0, nudged) - st).abs().max()) > 1e-4        # 1-ulp input change


def test_aa_net_authors_mode_on_the_full_case(psc_manifest, psc_nets):
    """Fast default check of the authors' mode (see the slow test above for the 2e-3 reason)."""
    case, sample, arrays = one_case(psc_manifest, 0)
    with torch.no_grad():
        st = psc_nets[1](T(sample["s0"]), T(arrays["pt_map"]))
    assert _maxdiff(st, arrays["st_trainmode"]) <= 2e-3


def test_authors_mode_is_train_mode_batchnorm_at_batch_1_and_per_sample_at_batch_n(psc_manifest, psc_nets):
    _, aa, _ = psc_nets
    (_, s1, _), (_, s2, _) = one_case(psc_manifest, 0), one_case(psc_manifest, 3)
    sg = torch.cat([T(s1["s0"]), T(s2["s0"])])
    pose = torch.cat([T(s1["p1"]), T(s2["p0"])])
    train_mode = copy.deepcopy(aa).set_bn_stats("batch")     # literal BatchNorm2d batch statistics
    with torch.no_grad():
        ours = aa(sg, pose)
        singles = torch.cat([train_mode(sg[i:i + 1], pose[i:i + 1]) for i in range(2)])
        assert torch.equal(aa(sg[:1], pose[:1]), singles[:1])      # bit-identical at batch 1
        assert float((ours - singles).abs().max()) <= 1e-5        # batch N = N runs of batch 1
        mixed = train_mode(sg, pose)                              # batch statistics mix the frames
        assert float((mixed - singles).abs().max()) > 1e-2


@pytest.mark.parametrize("i", CASE_PARAMS)
def test_ct_net_matches_fixture_images_features_and_debug_arrays(psc_manifest, psc_nets, i):
    _, _, ct = psc_nets
    case, sample, arrays = one_case(psc_manifest, i)
    s0, i0 = T(sample["s0"]), T(sample["i0"])
    with torch.no_grad():
        out, features, warped = ct(s0, T(arrays["st_map_trainmode"]), i0)
        assert _maxdiff(out, arrays["ct_trainmode"]) <= 1e-4
        source = ct.encode_source(s0, i0)
        debug = ct.decode(source, T(arrays["st_map"]))
        assert _maxdiff(debug["image"], arrays["ct"]) <= 1e-4
        assert _maxdiff(source["cloth_gradient"], arrays["dbg_ct_cloth_gradient"]) <= 1e-4
        assert _maxdiff(debug["occ_mask"], arrays["dbg_ct_occ_mask"]) <= 1e-4
        for k in range(3):
            assert _maxdiff(debug[f"flow_{k}"], arrays[f"dbg_ct_flow_{k}"]) <= 1e-4
        if "ct_s1_feature_0" in arrays:
            out, features, warped = ct(s0, T(arrays["st_map"]), i0)
            for k in range(3):
                assert _maxdiff(features[k], arrays[f"ct_s1_feature_{k}"]) <= 5e-4
                assert _maxdiff(warped[k], arrays[f"ct_s0_flow_{k}"]) <= 5e-4


def test_ct_net_batch_n_equals_n_runs_of_batch_1(psc_manifest, psc_nets):
    """Quirk ct-mask-broadcast: the reference's (B, h, w) * (B, C, h, w) only works at batch 1."""
    _, _, ct = psc_nets
    picked = [one_case(psc_manifest, i) for i in (0, 4)]
    s0 = torch.cat([T(s["s0"]) for _, s, _ in picked])
    st = torch.cat([T(a["st_map_trainmode"]) for _, _, a in picked])
    i0 = torch.cat([T(s["i0"]) for _, s, _ in picked])
    with torch.no_grad():
        batched, _, _ = ct(s0, st, i0)
        for i, (_, _, arrays) in enumerate(picked):
            single, _, _ = ct(s0[i:i + 1], st[i:i + 1], i0[i:i + 1])
            assert float((batched[i:i + 1] - single).abs().max()) <= 1e-5
            assert _maxdiff(batched[i:i + 1], arrays["ct_trainmode"]) <= 1e-4


def test_checkpoint_folder_loads_strictly_and_names_the_file(tmp_path, psc_checkpoint_dir, psc_state_dicts):
    need_fixtures()
    pm, aa, ct, info = load_psc_nets(psc_checkpoint_dir)
    assert aa.bn_stats == "sample" and set(info) == {"pm.pth", "aa.pth", "ct.pth"}
    # quirk ct-output-alias: the effective conv is output.model.3, whatever output.conv1 holds
    assert torch.equal(ct.output.conv1.weight, torch.from_numpy(psc_state_dicts["ct_net"]["output.model.3.weight"]))
    # DataParallel prefix, and only one of the aliased names, are accepted
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("pm.pth", "aa.pth"):
        state = torch.load(psc_checkpoint_dir / name)
        torch.save({f"module.{k}": v for k, v in state.items()}, folder / name)
    ct_state = torch.load(psc_checkpoint_dir / "ct.pth")
    del ct_state["output.conv1.weight"], ct_state["output.conv1.bias"]
    torch.save(ct_state, folder / "ct.pth")
    _, aa2, ct2, _ = load_psc_nets(folder, bn_stats="running")
    assert aa2.bn_stats == "running" and torch.equal(ct2.output.conv1.weight, ct.output.conv1.weight)
    # a missing key, a wrong shape, a non-state-dict: one line naming the file
    broken = dict(ct_state)
    del broken["flow_out.0.weight"]
    torch.save(broken, folder / "ct.pth")
    with pytest.raises(UserError, match=r"ct\.pth: state dict keys do not match CTNet: 1 missing \(e\.g\. flow_out"):
        load_psc_nets(folder)
    torch.save({**ct_state, "flow_out.0.bias": torch.zeros(3)}, folder / "ct.pth")
    with pytest.raises(UserError, match=r"ct\.pth: flow_out\.0\.bias has shape \(3,\); expected \(2,\)"):
        load_psc_nets(folder)
    (folder / "ct.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"ct\.pth: is not a torch file poserender can read"):
        load_psc_nets(folder)
    with pytest.raises(UserError, match="not a folder"):
        load_psc_nets(tmp_path / "nope")


def test_unused_reference_parameters_keep_their_keys():
    """Quirks aa-dead-branch, aa-adain1-reused, ct-dead-encoder: the keys exist (strict loading)."""
    from poserender.models.psc import AANet, CTNet

    aa_keys, ct_keys = set(AANet().state_dict()), set(CTNet().state_dict())
    assert {"bottle2_neck3.main.0.weight", "adain3.get_gamma.weight"} <= aa_keys
    assert {"encoder4_conv4.model.5.bias", "output.conv1.weight", "output.model.3.weight"} <= ct_keys
    with pytest.raises(UserError, match="1 unexpected"):
        load_strict(AANet(), {**AANet().state_dict(), "extra.weight": torch.zeros(1)}, "aa.pth")


@pytest.mark.slow
@pytest.mark.parametrize("i", range(1, 6))
def test_aa_net_authors_mode_on_the_compact_cases(psc_manifest, psc_nets, i):
    from poserender.models.psc.ops import PoseHeatmaps

    case, sample, arrays = one_case(psc_manifest, i)
    xy = T(arrays["pt_peaks_xy"].T[None].copy())
    with torch.no_grad():
        st = psc_nets[1](T(sample["s0"]), PoseHeatmaps(256, 256)(xy, (xy[..., 0] != -1).float()))
    assert _maxdiff(grid(st, psc_manifest["layout"]["grid_index"]), arrays["st_trainmode_grid"]) <= 2e-3


def test_batch_stats_mode_trains_like_batchnorm2d():
    """For training: "batch" is nn.BatchNorm2d in train mode, running statistics updated; in eval
    mode it still normalises with batch statistics and leaves them alone."""
    from poserender.models.psc.blocks import PSCBatchNorm2d

    ours, ref = PSCBatchNorm2d(4, "batch"), torch.nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ours.train()(x), ref.train()(x))
    assert torch.allclose(ours.running_var, ref.running_var) and int(ours.num_batches_tracked) == 1
    before = ours.running_mean.clone()
    assert torch.allclose(ours.eval()(x), ref.train()(x)) and torch.equal(ours.running_mean, before)
