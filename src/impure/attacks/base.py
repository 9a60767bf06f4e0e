"""`Attack`, the base of every ℓ∞ attack: argument checks, model-state handling, randomness, projection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._util.checks import check_budget, check_count, check_images, check_labels, inputs_validated
from .._util.modes import eval_mode
from .._util.rng import per_sample

__all__ = ["Attack"]


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run `model` in eval mode without parameter gradients; restore every module's mode and flag after."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    with eval_mode(model):
        try:
            for param, _ in flags:
                param.requires_grad_(False)  # the attack needs input gradients only
            yield
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)


class Attack:
    """Base of the ℓ∞ attacks: `attack(images, labels)` returns adversarial images in the ε-ball and [0, 1].

    The model runs in eval mode with its parameters' `requires_grad` off during the attack; both are
    restored afterwards, even on error. Work happens on the images' device. A subclass implements
    `_perturb(images, labels, target_labels, generator)`. A model with a method
    `loss_gradient(images, loss) -> (gradient, logits)`, such as `EOT`, supplies the gradient the attack
    ascends itself (EOT: the mean over its passes).

    Args:
        model: a classifier mapping (N, 3, H, W) images in [0, 1] to (N, classes) logits.
        eps: the ℓ∞ radius of the perturbation on the [0, 1] scale.
        seed: makes every call repeatable (each call starts a fresh generator from it).
        generator: a `torch.Generator` to draw from instead (its state carries over between calls).
            With neither, the random numbers come from torch's global generator (`torch.manual_seed`).
    """

    supports_targeted: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if seed is not None:
            check_count("seed", seed, minimum=0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.model = model
        self.eps = check_budget("eps", eps)
        self.seed = seed
        self.generator = generator
        self._num_labels = 0  # smallest class count the labels of the current call need

    def __repr__(self) -> str:
        skip = {"model", "generator"}
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in skip and not k.startswith("_"))
        return f"{type(self).__name__}({settings})"

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, target_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attack a batch.

        Args:
            images: (N, 3, H, W) float images in [0, 1].
            labels: (N,) true class indices.
            target_labels: (N,) classes to reach; makes the attack targeted (where the method has a
                targeted form). Without it the attack moves away from `labels`.

        Returns:
            Detached adversarial images (N, 3, H, W), within `eps` of `images` (ℓ∞) and in [0, 1].
        """
        check_images(images)
        check_labels(labels, images.shape[0])
        if target_labels is not None:
            if not self.supports_targeted:
                raise ValueError(f"{type(self).__name__} has no targeted form; call it without target_labels")
            check_labels(target_labels, images.shape[0], name="target_labels")
            hits = int((target_labels.to(labels.device) == labels).sum())
            if hits:
                raise ValueError(f"target_labels equal the true labels for {hits} image(s); pick other classes")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("attacks need gradients: call them outside torch.inference_mode()")
        device = images.device
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.device != device:
                raise ValueError(
                    f"the model is on {tensor.device} but the images are on {device}; move one of them "
                    f"(e.g. `model.to(images.device)`)"
                )
        images = images.detach().clone()  # also turns inference tensors into ordinary ones
        labels = labels.to(device=device, dtype=torch.long)
        if target_labels is not None:
            target_labels = target_labels.to(device=device, dtype=torch.long)
            self._num_labels = 1 + max(int(labels.max()), int(target_labels.max()))
        else:
            self._num_labels = 1 + int(labels.max())
        with attack_mode(self.model), inputs_validated():  # iterates stay in [0, 1]: no checks per step
            adversarial = self._perturb(images, labels, target_labels, self._make_generator())
        return self.project(adversarial, images).detach()

    def _perturb(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target_labels: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError

    # Helpers for subclasses.

    def project(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Clip `adversarial` into the ℓ∞ ball of radius `eps` around `images` and into [0, 1]."""
        delta = (adversarial - images).clamp(-self.eps, self.eps)
        return (images + delta).clamp(0.0, 1.0)

    def _make_generator(self) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        seed = self.seed if self.seed is not None else int(torch.randint(2**62, ()))
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def _uniform(like: torch.Tensor, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
        """Uniform noise shaped like `like` on its device, drawn from `generator` (CPU or the same device)."""
        noise = per_sample(lambda shape: torch.rand(shape, generator=generator, device=generator.device,
                                                    dtype=like.dtype), like.shape)
        return (low + (high - low) * noise).to(like.device)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._checked_logits(self.model(images), images.shape[0])

    def _checked_logits(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        """`logits` after checking they are (batch, classes) with a class for every label."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return (N, classes) logits, got {shape} for {batch} images")
        if logits.shape[1] < self._num_labels:
            raise ValueError(
                f"labels go up to {self._num_labels - 1} but the model has only {logits.shape[1]} classes"
            )
        return logits

    def _gradient(
        self,
        images: torch.Tensor,
        loss: Callable[[torch.Tensor], torch.Tensor],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of `loss(logits(transform(images)))` (a per-sample vector, summed) w.r.t. images, and
        the logits."""
        loss_gradient = getattr(self.model, "loss_gradient", None)
        if loss_gradient is not None:  # e.g. EOT: the mean of the passes' gradients, in memory-bounded chunks
            if transform is None:
                grad, logits = loss_gradient(images, loss)
                return grad, self._checked_logits(logits, images.shape[0])
            inputs = images.detach().requires_grad_(True)
            with torch.enable_grad():
                transformed = transform(inputs)
            grad, logits = loss_gradient(transformed.detach(), loss)
            (grad,) = torch.autograd.grad(transformed, inputs, grad)  # back through the transform
            return grad, self._checked_logits(logits, images.shape[0])
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(images if transform is None else transform(images))
            (grad,) = torch.autograd.grad(loss(logits).sum(), images)
        return grad, logits.detach()

    @staticmethod
    def _cross_entropy(labels: torch.Tensor, target_labels: torch.Tensor | None) -> Callable:
        """Per-sample loss to ascend: CE from the true class, or minus CE to the target class."""
        if target_labels is None:
            return lambda logits: F.cross_entropy(logits, labels, reduction="none")
        return lambda logits: -F.cross_entropy(logits, target_labels, reduction="none")

    @staticmethod
    def _succeeded(logits: torch.Tensor, labels: torch.Tensor, target_labels: torch.Tensor | None) -> torch.Tensor:
        """Boolean (N,): misclassified (untargeted) or classified as the target (targeted)."""
        predictions = logits.argmax(dim=1)
        return predictions != labels if target_labels is None else predictions == target_labels
