"""Information Regulation Mechanism (IRM) and the MTTS stage-2 distillation loss.

DESIGN section 4 gives IRM's role, not its code (none is published): from the outputs of the
auxiliary optical model f'_T_Opt, the source model f_S (on the optical input) and the auxiliary
SAR model f'_T_SAR, compute a per-sample discrepancy ratio rho, split into rho^Opt and rho^SAR,
which multiply each auxiliary model's soft targets before they supervise the target model f_T.
The formula below is this project's choice, built on OGM-GE's ratio (see docs/methods.md).

Per sample i, with ``p_u = softmax(z_u / T_irm)`` for u in {S (source), O (aux optical),
R (aux SAR)}:

1. reference class (the unknown label's stand-in; target labels are never used):
   ``reference="consensus"`` (default): ``y_i = argmax_c (p_S + p_O + p_R)_ic``, the soft vote of
   the three models; ``reference="source"``: ``y_i = argmax_c p_S,ic``.
2. label-free OGM-GE scores: ``s_O,i = p_O,i[y_i]``, ``s_R,i = p_R,i[y_i]`` (clamped >= eps).
3. discrepancy ratio ``rho_i = s_O,i / s_R,i``; in ``mode="batch"`` the OGM-GE batch ratio
   ``rho = sum_i s_O,i / sum_i s_R,i`` is used for every sample.
4. split: ``rho^Opt_i = rho_i^alpha / (1 + rho_i^alpha) = (1 + tanh(alpha/2 * ln rho_i)) / 2``,
   ``rho^SAR_i = 1 - rho^Opt_i``.
5. floor: ``w_O,i = w_min + (1 - 2 w_min) rho^Opt_i``, ``w_R,i = 1 - w_O,i``; both lie in
   ``[w_min, 1 - w_min]`` and sum to 1, so neither modality is ever silenced.

``mode="off"``: ``w_O = w_R = 1/2``. Unlike OGM-GE, which *slows down* the stronger modality to
rebalance learning, IRM lets the modality that is more reliable on this sample guide more.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from raypipe.errors import ConfigError
from raypipe.losses.kd import kd_per_sample, soft_targets

__all__ = ["IRM_MODES", "IRM_REFERENCES", "IRM_DEFAULTS", "SRC_WEIGHTINGS", "irm_scores", "irm_weights",
           "target_distillation_loss"]

IRM_MODES: tuple[str, ...] = ("per_sample", "batch", "off")
IRM_REFERENCES: tuple[str, ...] = ("consensus", "source")
SRC_WEIGHTINGS: tuple[str, ...] = ("none", "irm_opt")
IRM_DEFAULTS: dict[str, Any] = {"alpha": 1.0, "temperature": 1.0, "w_min": 0.1, "reference": "consensus",
                                "eps": 1e-6, "cloud_prior": False}


def _check_hp(mode: str, alpha: float, temperature: float, w_min: float, reference: str, eps: float) -> None:
    """A last guard for direct callers; configurations are validated on the driver, with their dotted
    paths, by ``IRMConfig.validate`` (raypipe.methods.mtts.config) before anything trains."""
    if mode not in IRM_MODES:
        raise ConfigError("irm.mode", f"must be one of {list(IRM_MODES)}, got {mode!r}")
    if not alpha >= 0:
        raise ConfigError("irm.alpha", f"must be >= 0, got {alpha!r}")
    if not temperature > 0:
        raise ConfigError("irm.temperature", f"must be > 0, got {temperature!r}")
    if not 0.0 <= w_min < 0.5:
        raise ConfigError("irm.w_min", f"must be in [0, 0.5), got {w_min!r}")
    if reference not in IRM_REFERENCES:
        raise ConfigError("irm.reference", f"must be one of {list(IRM_REFERENCES)}, got {reference!r}")
    if not 0 < eps < 1:
        raise ConfigError("irm.eps", f"must be in (0, 1), got {eps!r}")


@torch.no_grad()
def irm_scores(opt_logits: torch.Tensor, src_logits: torch.Tensor, sar_logits: torch.Tensor,
               temperature: float = 1.0, reference: str = "consensus", eps: float = 1e-6
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s_opt, s_sar, reference_class)``, each ``(B,)``: each auxiliary model's probability of
    the reference class (steps 1-2 of the module docstring)."""
    shapes = {tuple(opt_logits.shape), tuple(src_logits.shape), tuple(sar_logits.shape)}
    if len(shapes) != 1 or opt_logits.ndim != 2:
        raise ValueError(f"teacher logits must all be (B, C); got {sorted(shapes)}")
    p_o = F.softmax(opt_logits.detach().float() / temperature, dim=-1)
    p_s = F.softmax(src_logits.detach().float() / temperature, dim=-1)
    p_r = F.softmax(sar_logits.detach().float() / temperature, dim=-1)
    ref = (p_s + p_o + p_r).argmax(dim=-1) if reference == "consensus" else p_s.argmax(dim=-1)
    idx = ref.unsqueeze(1)
    s_o = p_o.gather(1, idx).squeeze(1).clamp_min(eps)
    s_r = p_r.gather(1, idx).squeeze(1).clamp_min(eps)
    return s_o, s_r, ref


@torch.no_grad()
def irm_weights(opt_logits: torch.Tensor, src_logits: torch.Tensor, sar_logits: torch.Tensor,
                mode: str = "per_sample", alpha: float = IRM_DEFAULTS["alpha"],
                temperature: float = IRM_DEFAULTS["temperature"],
                w_min: float = IRM_DEFAULTS["w_min"], reference: str = IRM_DEFAULTS["reference"],
                eps: float = IRM_DEFAULTS["eps"], mask: torch.Tensor | None = None,
                cloud_prior: bool = IRM_DEFAULTS["cloud_prior"], cloud_fraction: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample weights ``(w_opt, w_sar)``, each ``(B,)`` float32, no grad, ``w_opt + w_sar = 1``.

    ``mode``: ``"per_sample"`` (default), ``"batch"`` (one batch-level ratio for all samples,
    the ablation closest to OGM-GE), ``"off"`` (0.5 / 0.5). Hyper-parameters: ``alpha`` (sharpness
    of the split; 0 gives equal weights), ``temperature`` (of the confidences), ``w_min`` (floor
    of each weight), ``reference`` (``"consensus"`` or ``"source"``), ``eps``. ``mask`` (bool or
    0/1, ``(B,)``): in ``"batch"`` mode, the batch ratio is taken over the masked-in samples only
    (the stage-2 filtering ablation); ignored by the other modes.

    ``cloud_prior`` (a raypipe extension, not published; off by default): the optical share is
    multiplied by the sample's clear fraction after the split, ``rho^Opt_i <- rho^Opt_i (1 - c_i)``,
    with ``cloud_fraction`` c from the pipeline's cloud stage (both modes), so that
    ``w_O,i - w_min <= (1 - 2 w_min)(1 - c_i)`` whatever the teachers say: a fully cloudy tile gets
    ``w_O = w_min`` exactly, and at c = 0.95 ``w_O <= w_min + 0.05 (1 - 2 w_min)``. (Scaling the score
    s_O before the ratio, as an earlier version did, does not bound w_O: when SAR disagrees with the
    reference its score is clamped to eps too, and the ratio of two clamped scores is 1.)
    """
    _check_hp(mode, alpha, temperature, w_min, reference, eps)
    b = opt_logits.shape[0]
    if mode == "off":
        half = torch.full((b,), 0.5, device=opt_logits.device)
        return half, half.clone()
    s_o, s_r, _ = irm_scores(opt_logits, src_logits, sar_logits, temperature, reference, eps)
    clear = None
    if cloud_prior:
        if cloud_fraction is None:
            raise ValueError("irm cloud_prior needs each sample's cloud_fraction")
        c = cloud_fraction.detach().to(device=s_o.device, dtype=s_o.dtype).reshape(-1)
        if c.shape != s_o.shape:
            raise ValueError(f"cloud_fraction has {c.numel()} entries for {s_o.numel()} samples")
        clear = 1.0 - c.clamp(0.0, 1.0)
    if mode == "batch":
        m = torch.ones_like(s_o) if mask is None else mask.detach().to(s_o.dtype).reshape(-1)
        if m.sum() <= 0:
            m = torch.ones_like(s_o)
        log_rho = (torch.log((m * s_o).sum()) - torch.log((m * s_r).sum())).expand(b)
    else:
        log_rho = torch.log(s_o) - torch.log(s_r)
    rho_opt = torch.sigmoid(alpha * log_rho)  # = rho^alpha / (1 + rho^alpha)
    if clear is not None:
        rho_opt = rho_opt * clear
    w_opt = w_min + (1.0 - 2.0 * w_min) * rho_opt
    return w_opt.contiguous(), (1.0 - w_opt).contiguous()


def _irm_settings(irm: Any) -> dict[str, Any]:
    """``irm_weights`` keyword arguments from an ``IRMConfig`` (same field names) or a mapping."""
    if irm is None:
        return {}
    if dataclasses.is_dataclass(irm):
        irm = {f.name: getattr(irm, f.name) for f in dataclasses.fields(irm)}
    allowed = set(IRM_DEFAULTS) | {"mode"}
    for key in irm:
        if key not in allowed:
            raise ConfigError(f"irm.{key}", f"unknown IRM setting; allowed: {sorted(allowed)}")
    return dict(irm)


def _heads(student_out: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(student_out, Mapping):
        return student_out["fused"], student_out["optical"], student_out["sar"]
    return student_out.fused, student_out.optical, student_out.sar


def target_distillation_loss(student_out: Any, src_logits: torch.Tensor, opt_logits: torch.Tensor,
                             sar_logits: torch.Tensor, irm: Any = None, temperature: float = 4.0,
                             lambda_src: float = 1.0, lambda_aux: float = 1.0, lambda_uni: float = 0.5,
                             src_weighting: str = "none",
                             sample_mask: torch.Tensor | None = None, cloud_fraction: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MTTS stage-2 loss for the target model f_T (a ``MultiModalNet``), no labels, no filtering.

    ``student_out``: a ``MultiModalOutput`` (or dict) with ``fused``, ``optical``, ``sar`` logits.
    Teachers (all detached): ``src_logits`` = f_S on the target optical input, ``opt_logits`` =
    f'_T_Opt on the same optical input, ``sar_logits`` = f'_T_SAR on the SAR input. With
    ``KD_i(s <- p) = T^2 KL(p_i || softmax(s_i/T))`` and ``p_u = softmax(z_u / T)``::

        L_src = mean_i KD_i(fused <- p_S)                  (src_weighting="none")
              = sum_i w_O,i KD_i(fused <- p_S) / B         (src_weighting="irm_opt")
        L_aux = mean_i [ w_O,i KD_i(fused <- p_O) + w_R,i KD_i(fused <- p_R) ]
        L_uni = mean_i KD_i(optical <- p_O) + mean_i KD_i(sar <- p_R)
        L     = lambda_src L_src + lambda_aux L_aux + lambda_uni L_uni

    Because ``w_O + w_R = 1``, L_aux has the same student gradient as KD to the IRM-weighted
    mixture ``w_O p_O + w_R p_R`` (they differ by the teachers' entropies, a constant): IRM
    multiplies each auxiliary model's soft targets before they supervise the fused head. The
    unimodal heads learn from their own-modality teacher, unweighted (so every head is used:
    DDP needs no ``find_unused_parameters`` while ``lambda_uni > 0``).
    ``irm``: IRM's settings, as an ``IRMConfig`` or a mapping with ``irm_weights``' keyword names
    (mode, alpha, temperature, w_min, reference, eps, cloud_prior; missing ones take the defaults);
    ``temperature`` is the KD temperature T above. ``cloud_fraction`` (``(B,)``) is passed on to it (needed only with ``cloud_prior``).
    ``sample_mask`` (bool or 0/1, ``(B,)``, e.g. the keep mask of ``filter_pseudo_labels`` on
    ``src_logits``): the "filtering in stage 2" ablation; every ``mean_i`` above becomes the mean
    over kept samples (``sum_i m_i x_i / max(1, sum_i m_i)``; a batch with nothing kept gives 0
    with zero gradients). MTTS itself uses no filtering in stage 2 (``sample_mask=None``).

    Returns ``(loss, parts)``; ``parts`` holds detached scalars: ``loss``, ``kd_src``, ``kd_aux``,
    ``kd_aux_opt``, ``kd_aux_sar`` (weighted shares of kd_aux), ``kd_uni_opt``, ``kd_uni_sar``,
    ``w_opt_mean``, ``w_sar_mean``, ``w_opt_min``, ``w_opt_max``.
    """
    if src_weighting not in SRC_WEIGHTINGS:
        raise ConfigError("loss.src_weighting", f"must be one of {list(SRC_WEIGHTINGS)}, got {src_weighting!r}")
    for name, lam in (("lambda_src", lambda_src), ("lambda_aux", lambda_aux), ("lambda_uni", lambda_uni)):
        if not lam >= 0:
            raise ConfigError(f"loss.{name}", f"must be >= 0, got {lam!r}")
    hp = _irm_settings(irm)
    fused, opt_head, sar_head = _heads(student_out)
    w_opt, w_sar = irm_weights(opt_logits, src_logits, sar_logits, mask=sample_mask,
                               cloud_fraction=cloud_fraction, **hp)
    T = temperature
    if sample_mask is None:
        def mean(x: torch.Tensor) -> torch.Tensor:
            return x.mean()
    else:
        m = sample_mask.detach().to(device=fused.device, dtype=torch.float32).reshape(-1)
        if m.shape != w_opt.shape:
            raise ValueError(f"sample_mask has {m.numel()} entries for {w_opt.numel()} samples")
        denom = m.sum().clamp_min(1.0)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return (m * x).sum() / denom

    p_s, p_o, p_r = soft_targets(src_logits, T), soft_targets(opt_logits, T), soft_targets(sar_logits, T)
    kd_src_i = kd_per_sample(fused, p_s, T)
    kd_src = mean(w_opt * kd_src_i) if src_weighting == "irm_opt" else mean(kd_src_i)
    kd_aux_opt = mean(w_opt * kd_per_sample(fused, p_o, T))
    kd_aux_sar = mean(w_sar * kd_per_sample(fused, p_r, T))
    kd_aux = kd_aux_opt + kd_aux_sar
    kd_uni_opt = mean(kd_per_sample(opt_head, p_o, T))
    kd_uni_sar = mean(kd_per_sample(sar_head, p_r, T))
    loss = lambda_src * kd_src + lambda_aux * kd_aux + lambda_uni * (kd_uni_opt + kd_uni_sar)
    parts = {
        "loss": loss, "kd_src": kd_src, "kd_aux": kd_aux, "kd_aux_opt": kd_aux_opt, "kd_aux_sar": kd_aux_sar,
        "kd_uni_opt": kd_uni_opt, "kd_uni_sar": kd_uni_sar,
        "w_opt_mean": w_opt.mean(), "w_sar_mean": w_sar.mean(), "w_opt_min": w_opt.min(), "w_opt_max": w_opt.max(),
    }
    return loss, {k: v.detach() for k, v in parts.items()}
