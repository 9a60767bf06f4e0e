"""ℓ∞ adversarial attacks with the torchattacks call shape, `attack(images, labels) -> adversarial images`,
and the adaptive wrapper EOT."""

from .apgd import APGD
from .base import Attack
from .bim import BIM
from .cw import CW
from .deepfool import DeepFool
from .difgsm import DIFGSM
from .eot import EOT, adaptive_target
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .pgd import PGD
from .registry import DEFAULT_ATTACKS, attack_settings, build_attack, check_attack_names, list_attacks

__all__ = ["APGD", "BIM", "CW", "DEFAULT_ATTACKS", "DIFGSM", "EOT", "FGSM", "MIFGSM", "PGD", "Attack", "DeepFool",
           "adaptive_target", "attack_settings", "build_attack", "check_attack_names", "list_attacks"]
