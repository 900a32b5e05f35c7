"""PSC (TMM 2022, "Pose-Shape-Content inference"): PM-Net, AA-Net, CT-Net re-implemented with the
reference's state-dict layout, the in-graph between-stage steps (ops.py) and the deployment
stages (stages.py). See ``../shared/fixtures/psc/README.md`` for the quirks reproduced here."""
from .aa_net import AANet
from .blocks import BN_STATS
from .ct_net import CTNet
from .pm_net import PMNet

__all__ = ["AANet", "BN_STATS", "CTNet", "PMNet"]
