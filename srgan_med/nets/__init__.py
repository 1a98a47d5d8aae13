"""Networks: the SRResNet generator and the SRGAN discriminator."""

from srgan_med.nets.discriminator import Discriminator
from srgan_med.nets.srresnet import SRResNet

GENERATORS = {"srresnet": SRResNet}

__all__ = ["Discriminator", "GENERATORS", "SRResNet"]
