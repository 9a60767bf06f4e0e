"""ℓ∞ adversarial attacks with the torchattacks call shape, `attack(images, labels) -> adversarial images`,
and the adaptive wrapper EOT."""

from .apgd import APGD
from .base import Attack
from .bim import BIM
from .cw import CW
from .deepfool import DeepFool
from .difgsm import DIFGSM
from .eot import EOT
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .pgd import PGD

__all__ = ["APGD", "BIM", "CW", "DIFGSM", "EOT", "FGSM", "MIFGSM", "PGD", "Attack", "DeepFool"]
