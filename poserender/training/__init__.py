"""Training: datasets in the reference layouts, the references' losses and trainers, atomic
resumable checkpoints, TensorBoard logs and DDP under torchrun (see ``poserender train --help``).

config.py / pose2img_data.py / pose2img_trainer.py (+ discriminator.py, vgg.py, losses.py) train
Pose2Img; psc_data.py / psc_objectives.py / psc_trainer.py train PSC's pm, aa and ct stages;
loop.py (steps, resume, checkpoints, logs), checkpoint.py, distributed.py and logs.py are shared.
Imports torch: only ``poserender train`` and tests import this package.
"""
