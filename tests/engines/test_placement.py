"""--devices / --replicate -> per-stage device plan, and device validation (no GPU needed)."""
from __future__ import annotations

import pytest

from poserender.engines import placement
from poserender.engines.placement import check_devices, parse_devices, plan_placement
from poserender.errors import UserError

POSE2IMG = [{"name": "source"}, {"name": "frame"}]
PSC = [{"name": "pm"}, {"name": "aa"}, {"name": "ct"}]


@pytest.mark.parametrize("text, devices", [("0", ("0",)), ("0,1", ("0", "1")), ("0,0", ("0", "0")),
                                           (" 1 , 0 ", ("1", "0")), ("cpu", ("cpu",)), ("CPU,cpu", ("cpu", "cpu")),
                                           (None, ("cpu",)), (["0", 1], ("0", "1"))])
def test_parse_devices(text, devices):
    assert parse_devices(text) == devices


@pytest.mark.parametrize("text", ["", "a", "0,", "-1", "0;1", "gpu0", "cpu,0"])
def test_parse_devices_rejects_garbage(text):
    with pytest.raises(UserError, match="GPU indices such as 0"):
        parse_devices(text)


def test_one_device_runs_everything():
    plan = plan_placement(POSE2IMG, ("1",))
    assert plan.stages == {"source": ("1",), "frame": ("1",)}
    assert plan.engines() == [("source", "1"), ("frame", "1")]


def test_pipeline_split_pose2img_source_on_first_frame_on_second():
    plan = plan_placement(POSE2IMG, (0, 1))
    assert plan.stages == {"source": ("0",), "frame": ("1",)}
    assert plan.describe() == "source on GPU 0; frame on GPU 1"


def test_pipeline_split_psc_puts_the_extra_stage_first():
    assert plan_placement(PSC, (0, 1)).stages == {"pm": ("0",), "aa": ("0",), "ct": ("1",)}
    assert plan_placement(PSC, ("1", "0", "2")).stages == {"pm": ("1",), "aa": ("0",), "ct": ("2",)}


def test_more_devices_than_stages_needs_replicate():
    with pytest.raises(UserError, match="--replicate"):
        plan_placement(POSE2IMG, (0, 1, 2))


def test_replicate_runs_per_frame_stages_everywhere_and_source_once():
    plan = plan_placement(POSE2IMG, (0, 1), replicate=True)
    assert plan.stages == {"source": ("0",), "frame": ("0", "1")}
    assert plan.engines() == [("source", "0"), ("frame", "0"), ("frame", "1")]
    assert plan.workers() == [("source", "0", 0), ("frame", "0", 0), ("frame", "1", 1)]
    assert plan_placement(PSC, (0, 1), replicate=True).stages == {"pm": ("0", "1"), "aa": ("0", "1"),
                                                                   "ct": ("0", "1")}


def test_devices_0_0_is_two_workers_but_one_engine_per_stage():
    split = plan_placement(POSE2IMG, (0, 0))
    assert split.stages == {"source": ("0",), "frame": ("0",)} and split.engines() == [("source", "0"), ("frame", "0")]
    replicated = plan_placement(POSE2IMG, ("0", "0"), replicate=True)
    assert replicated.engines() == [("source", "0"), ("frame", "0")]
    assert replicated.workers() == [("source", "0", 0), ("frame", "0", 0), ("frame", "0", 1)]
    assert replicated.to_dict() == {"devices": ["0", "0"], "replicate": True,
                                    "stages": {"source": ["0"], "frame": ["0", "0"]}}


def test_explicit_runs_key_overrides_the_name_rule():
    stages = [{"name": "source", "runs": "per_frame"}, {"name": "frame"}]
    assert plan_placement(stages, (0, 1), replicate=True).stages == {"source": ("0", "1"), "frame": ("0", "1")}
    with pytest.raises(UserError, match="runs 'sometimes'"):
        plan_placement([{"name": "x", "runs": "sometimes"}], (0, 1), replicate=True)


def test_replicate_without_per_frame_stage_is_an_error():
    with pytest.raises(UserError, match="no per-frame stage"):
        plan_placement([{"name": "source"}], (0, 1), replicate=True)


def test_device_that_does_not_exist_is_a_clear_error():
    with pytest.raises(UserError) as err:
        check_devices((0, 1), count_fn=lambda: 1)
    message = str(err.value)
    assert "GPU 1 does not exist" in message and "1 CUDA device (index 0)" in message
    assert "--devices 0,0" in message
    with pytest.raises(UserError, match=r"GPU 2, 3 does not exist; this machine has 2 CUDA devices \(indices 0-1\)"):
        check_devices((0, 2, 3), count_fn=lambda: 2)
    with pytest.raises(UserError, match="no CUDA device is visible"):
        check_devices((0,), count_fn=lambda: 0)


def test_devices_0_0_is_valid_on_one_gpu():
    check_devices((0, 0), count_fn=lambda: 1)       # no exception


@pytest.mark.parametrize("visible, count", [(None, 2), ("", 0), ("1", 1), ("0,1", 2), ("0,-1,1", 1), ("-1", 0)])
def test_visible_device_count_honours_cuda_visible_devices(monkeypatch, visible, count):
    monkeypatch.setattr("poserender.engines.machine.nvidia_smi", lambda: {"gpus": [{}, {}], "error": None})
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert placement.visible_device_count() == count


def test_cpu_slots_pass_the_gpu_check():
    check_devices(("cpu", "cpu"), count_fn=lambda: 0)   # no exception: nothing to look up


class _StandIn:
    """An engine that only has to exist: the pipeline's constructor builds and places them."""

    backend = "stand-in"

    def __init__(self, name):
        self.spec = type("Spec", (), {"name": name})()


@pytest.mark.parametrize("family_name", ["pose2img", "psc"])
@pytest.mark.parametrize("devices", [("0",), ("0", "1"), ("0", "1", "2")])
@pytest.mark.parametrize("replicate", [False, True])
def test_the_plan_build_records_is_the_one_render_runs(family_name, devices, replicate, monkeypatch):
    """For both families, 1 to 3 GPUs, with and without --replicate: the (stage, device) engines
    `build` builds and records equal the per-frame workers the streaming pipeline starts and the
    device it runs the identity stages on. Machine facts are injected: no GPU is needed."""
    from poserender import families
    from poserender.families import psc_io as psc_family
    from poserender.families.pose2img import stage_specs as pose2img_specs
    from poserender.runtime.pipeline import StreamOptions, StreamPipeline
    from poserender.runtime.sources import ArraySource

    family = families.get(family_name)
    specs = pose2img_specs(64, 64) if family_name == "pose2img" else psc_family.stage_specs(64, 64)
    stages = [{**spec.to_dict(), "runs": "per_identity" if spec.name in family.identity_stages else "per_frame"}
              for spec in specs]
    if len(devices) > len(stages) and not replicate:
        with pytest.raises(UserError, match="--replicate"):
            plan_placement(stages, devices, replicate)
        return
    check_devices(devices, count_fn=lambda: 3)
    recorded = plan_placement(stages, devices, replicate).to_dict()          # what `build` writes

    class Adapter:
        identity_stages, frame_stages = family.identity_stages, family.frame_stages

        def normalise(self, frame):
            return frame

    built = []

    def engines(device, threads):
        built.append(device)
        return {name: _StandIn(name) for name in family.stage_names}

    # runtime.stream.render_stream plans from the manifest's stages the same way, then starts the pipeline
    rendered = plan_placement(stages, parse_devices(",".join(devices)), replicate)
    pipeline = StreamPipeline(Adapter(), engines, ArraySource([], 25.0), None,
                              StreamOptions(devices=devices, replicate=replicate), placement=rendered)
    started = {name: [] for name in family.frame_stages}
    for _, name, label, _ in pipeline._workers:
        started[name].append(label.split("@")[1].split("#")[0])
    assert started == {name: recorded["stages"][name] for name in family.frame_stages}
    assert built[0] == recorded["stages"][family.identity_stages[0]][0]      # the identity stages' device
