"""Two-branch optical + SAR classifier with a fused head and one head per modality.

``MultiModalNet`` serves the MTTS target model f_T and the multi-modal baselines:

* MTTS stage 2 distils the fused head and both unimodal heads (see ``raypipe.methods.irm``).
* Late fusion (TLF): ``fusion="late"``, the fused logits are the mean of the unimodal logits.
* OGM-GE: ``fused_contributions`` splits the concat-fusion head into each modality's share
  ``out_m = W[:, m] f_m + b/2`` (as in the OGM-GE reference code); the encoders are the public
  attributes ``optical_encoder`` and ``sar_encoder`` whose gradients it scales.
* GDL: ``variational=True`` puts a (mu, log sigma^2) projection on each encoder (sampled in
  training, mu at eval); ``forward(..., drop="sar")`` gives the optical-only prediction by
  zeroing the SAR features, ``drop="optical"`` the SAR-only one.

DDP: in a normal forward (``drop=None``) every parameter feeds one of ``fused``, ``optical``,
``sar``. A loss that uses all three needs no ``find_unused_parameters``. A loss that uses only
``fused`` with ``fusion="concat"`` leaves the unimodal heads unused: either wrap with
``find_unused_parameters=True`` or add ``0 * (out.optical.sum() + out.sar.sum())`` to the loss.
With ``drop`` the dropped branch is still run and multiplied by 0 (its parameters receive zero
gradients rather than none), so the parameter set used is the same as without ``drop``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MultiModalNet", "MultiModalOutput", "MODALITIES", "FUSIONS"]

MODALITIES: tuple[str, ...] = ("optical", "sar")
FUSIONS: tuple[str, ...] = ("concat", "late")


@dataclass
class MultiModalOutput:
    """Outputs of ``MultiModalNet.forward``.

    ``fused``, ``optical``, ``sar``: logits ``(B, C)`` of the fused head and of the per-modality
    heads. ``optical_features``, ``sar_features``: the features the heads saw ``(B, D_m)``
    (zeros for a dropped modality; the sampled z when variational). ``mu``, ``logvar``: per
    modality ``(B, D_m)`` when the model is variational (GDL), else ``None``.
    """

    fused: torch.Tensor
    optical: torch.Tensor
    sar: torch.Tensor
    optical_features: torch.Tensor
    sar_features: torch.Tensor
    mu: dict[str, torch.Tensor] | None = None
    logvar: dict[str, torch.Tensor] | None = None

    def logits(self, head: str) -> torch.Tensor:
        """Logits of ``head`` (``"fused"``, ``"optical"`` or ``"sar"``)."""
        if head not in ("fused",) + MODALITIES:
            raise KeyError(f"unknown head {head!r}; expected 'fused', 'optical' or 'sar'")
        return getattr(self, head)


class _Variational(nn.Module):
    """Linear (mu, log sigma^2) projection; z = mu + eps * sigma in training, mu in eval."""

    def __init__(self, dim: int):
        super().__init__()
        self.mu = nn.Linear(dim, dim)
        self.logvar = nn.Linear(dim, dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, -4.0)  # start with small noise

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.mu(f), self.logvar(f)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return z, mu, logvar


class MultiModalNet(nn.Module):
    """Optical + SAR network: two encoders (any depths/widths), fused head, one head per modality.

    Args:
        optical_encoder, sar_encoder: modules with ``forward_features(x) -> (B, D)`` and an int
            attribute ``feature_dim`` (e.g. ``raypipe.models.ResNet``). An encoder that carries
            its own classifier has it removed (``reset_classifier(0)``) so that no parameter is
            unused under DDP; pretrained encoder weights are kept.
        num_classes: number of classes of every head.
        fusion: ``"concat"`` (linear fused head on ``[f_opt, f_sar]``) or ``"late"`` (fused logits
            = mean of the two unimodal logits, no extra parameters; the TLF baseline).
        variational: add a GDL-style (mu, log sigma^2) projection after each encoder.
    """

    def __init__(self, optical_encoder: nn.Module, sar_encoder: nn.Module, num_classes: int,
                 fusion: str = "concat", variational: bool = False):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for name, enc in (("optical_encoder", optical_encoder), ("sar_encoder", sar_encoder)):
            if not hasattr(enc, "forward_features") or not isinstance(getattr(enc, "feature_dim", None), int):
                raise TypeError(f"{name} must have forward_features() and an int feature_dim")
            if getattr(enc, "num_classes", 0) and hasattr(enc, "reset_classifier"):
                enc.reset_classifier(0)
        self.optical_encoder = optical_encoder
        self.sar_encoder = sar_encoder
        self.num_classes = num_classes
        self.fusion = fusion
        self.variational = variational
        d_opt, d_sar = optical_encoder.feature_dim, sar_encoder.feature_dim
        self.feature_dims = {"optical": d_opt, "sar": d_sar}
        self.optical_head = nn.Linear(d_opt, num_classes)
        self.sar_head = nn.Linear(d_sar, num_classes)
        self.fused_head = nn.Linear(d_opt + d_sar, num_classes) if fusion == "concat" else None
        self.optical_var = _Variational(d_opt) if variational else None
        self.sar_var = _Variational(d_sar) if variational else None
        heads = [self.optical_head, self.sar_head] + ([self.fused_head] if self.fused_head is not None else [])
        for h in heads:
            nn.init.normal_(h.weight, std=0.01)
            nn.init.zeros_(h.bias)

    def fuse(self, optical_features: torch.Tensor, sar_features: torch.Tensor,
             optical_logits: torch.Tensor | None = None, sar_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Fused logits from the two feature vectors (late fusion uses or recomputes the unimodal logits)."""
        if self.fused_head is not None:
            return self.fused_head(torch.cat([optical_features, sar_features], dim=1))
        if optical_logits is None:
            optical_logits = self.optical_head(optical_features)
        if sar_logits is None:
            sar_logits = self.sar_head(sar_features)
        return 0.5 * (optical_logits + sar_logits)

    def fused_contributions(self, out: MultiModalOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's share of the fused logits (they sum to ``out.fused``), for OGM-GE.

        Concat fusion: ``W[:, :D_opt] f_opt + b/2`` and ``W[:, D_opt:] f_sar + b/2``, as in the
        OGM-GE reference code. Late fusion: half of each unimodal logit vector.
        """
        if self.fused_head is None:
            return 0.5 * out.optical, 0.5 * out.sar
        d_opt = self.feature_dims["optical"]
        w, b = self.fused_head.weight, self.fused_head.bias
        out_opt = out.optical_features @ w[:, :d_opt].t() + 0.5 * b
        out_sar = out.sar_features @ w[:, d_opt:].t() + 0.5 * b
        return out_opt, out_sar

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, drop: str | None = None) -> MultiModalOutput:
        """Run both branches. ``drop="optical"`` or ``"sar"`` zeroes that modality's features
        before every head (GDL's unimodal predictions: ``fused`` is then the other modality alone)."""
        if drop not in (None,) + MODALITIES:
            raise ValueError(f"drop must be None, 'optical' or 'sar', got {drop!r}")
        f_opt = self.optical_encoder.forward_features(optical)
        f_sar = self.sar_encoder.forward_features(sar)
        mu = logvar = None
        if self.variational:
            f_opt, mu_o, lv_o = self.optical_var(f_opt)
            f_sar, mu_s, lv_s = self.sar_var(f_sar)
            mu, logvar = {"optical": mu_o, "sar": mu_s}, {"optical": lv_o, "sar": lv_s}
        if drop == "optical":
            f_opt = f_opt * 0.0
        elif drop == "sar":
            f_sar = f_sar * 0.0
        opt_logits = self.optical_head(f_opt)
        sar_logits = self.sar_head(f_sar)
        fused = self.fuse(f_opt, f_sar, opt_logits, sar_logits)
        return MultiModalOutput(fused=fused, optical=opt_logits, sar=sar_logits,
                                optical_features=f_opt, sar_features=f_sar, mu=mu, logvar=logvar)
