"""Multi-task optimisers that combine the tasks' gradients rather than their losses.

Each method here maps the Jacobian of the task losses with respect to the shared parameters (one row per task,
`(T, P)`) to one update direction `(P,)`. TorchJD implements them, each tested by its authors; GradNorm, which
TorchJD lacks, is written below as a TorchJD `Aggregator` so the trainer treats every method alike. The task
heads get the ordinary sum of their task's gradient (`torchjd.autojac.mtl_backward`).

Cost: the Jacobian needs one backward pass per task through the shared part (TorchJD batches them with vmap),
where a weighted sum needs one; the trial's time split and `--dry-run` show it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchjd import aggregation as jd


class GradNorm(jd.Aggregator):
    """GradNorm (Chen et al., ICML 2018): learned task weights w_t (summing to T) that equalise the norms of the
    weighted task gradients, scaled by each task's relative inverse training rate.

    At each step, with g_t the task's gradient on the shared parameters, G_t = w_t |g_t|, L~_t = L_t / L_t(0) and
    r_t = L~_t / mean(L~): the weights take one gradient step on sum_t |G_t - mean(G) r_t^alpha| (the target held
    constant, as in the paper), are clipped positive and renormalised to sum T; the update is sum_t w_t g_t.
    The paper measures the norms at the last shared layer to save time; the Jacobian here already holds every
    shared parameter's row, so the norms are over all of them. `observe(losses)` gives the step's losses."""

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__()
        self.alpha, self.lr = alpha, lr
        self.register_buffer("weights", torch.ones(n_tasks))  # (T,), checkpointed with the trainer's state
        self.register_buffer("initial_losses", torch.zeros(0))  # (T,) once the first step has run
        self._losses: Tensor | None = None

    def observe(self, losses: Tensor) -> None:
        losses = losses.detach().float()  # (T,)
        if self.initial_losses.numel() == 0:
            self.initial_losses = losses.clone()
        self._losses = losses

    def forward(self, matrix: Tensor, /) -> Tensor:
        w = self.weights.to(matrix.device)
        norms = matrix.norm(dim=1)  # (T,): |g_t|
        if self._losses is not None:
            ratio = self._losses.to(matrix.device) / self.initial_losses.to(matrix.device).clamp_min(1e-12)
            target = (w * norms).mean() * (ratio / ratio.mean().clamp_min(1e-12)) ** self.alpha
            w = (w - self.lr * torch.sign(w * norms - target) * norms).clamp_min(1e-3)
            w = w * (len(w) / w.sum())
            self.weights = w.detach()
        return w @ matrix  # (P,)


@dataclass(frozen=True)
class Method:
    """A gradient-aggregation method: its paper, its options (TrialConfig keys, with defaults), the pip extra it
    needs, and how to build it for T tasks from the resolved options."""

    paper: str
    build: Callable[[int, dict[str, Any]], jd.Aggregator]
    options: dict[str, float] | None = None
    extra: str | None = None


METHODS: dict[str, Method] = {
    "mean": Method("the mean of the task gradients (equal-weight linear scalarisation)", lambda t, o: jd.Mean()),
    "rlw": Method("RLW, random loss weighting (Lin et al., TMLR 2022)", lambda t, o: jd.Random()),
    "mgda": Method("MGDA-UB (Sener & Koltun, NeurIPS 2018; Désidéri 2012)", lambda t, o: jd.MGDA()),
    "pcgrad": Method("PCGrad, gradient surgery (Yu et al., NeurIPS 2020)", lambda t, o: jd.PCGrad()),
    "graddrop": Method("GradDrop (Chen et al., NeurIPS 2020)", lambda t, o: jd.GradDrop()),
    "imtl_g": Method("IMTL-G (Liu et al., ICLR 2021)", lambda t, o: jd.IMTLG()),
    "gradvac": Method("GradVac (Wang et al., ICLR 2021)", lambda t, o: jd.GradVac(beta=o["gradvac_beta"]),
                      {"gradvac_beta": 0.5}),
    "cagrad": Method("CAGrad (Liu et al., NeurIPS 2021)", lambda t, o: jd.CAGrad(c=o["cagrad_c"]),
                     {"cagrad_c": 0.4}, extra="solvers"),
    "nash_mtl": Method("Nash-MTL (Navon et al., ICML 2022)", lambda t, o: jd.NashMTL(n_tasks=t), extra="solvers"),
    "aligned_mtl": Method("Aligned-MTL (Senushkin et al., CVPR 2023)", lambda t, o: jd.AlignedMTL()),
    "dualproj": Method("DualProj (Quinton & Rey, 2024)", lambda t, o: jd.DualProj()),
    "upgrad": Method("UPGrad, Jacobian descent (Quinton & Rey, 2024)", lambda t, o: jd.UPGrad()),
    "fairgrad": Method("FairGrad, alpha-fair (Ban & Ji, ICML 2024)",
                       lambda t, o: jd.FairGrad(alpha=o["fairgrad_alpha"]), {"fairgrad_alpha": 1.0}),
    "config": Method("ConFIG, conflict-free (Liu et al., ICLR 2025)", lambda t, o: jd.ConFIG()),
    "gradnorm": Method("GradNorm (Chen et al., ICML 2018); written here, TorchJD lacks it",
                       lambda t, o: GradNorm(t, o["gradnorm_alpha"], o["gradnorm_lr"]),
                       {"gradnorm_alpha": 1.5, "gradnorm_lr": 0.025}),
}
# weight the losses: one backward pass (mtl.losses.TaskWeighting)
LOSS_METHODS = {"fixed": "a fixed weighted sum of the losses (linear scalarisation)",
                "uncertainty": "uncertainty weighting (Kendall et al., CVPR 2018)",
                "dwa": "DWA, dynamic weight average (Liu et al., CVPR 2019)"}
PAPERS = {**LOSS_METHODS, **{name: m.paper for name, m in METHODS.items()}}
OPTION_KEYS = {key: name for name, m in METHODS.items() for key in (m.options or {})}
EXTRAS = {"solvers": "cvxpy and its solvers: pip install 'mtl-tune[solvers]' (torchjd[cagrad,nash_mtl])"}


def build_aggregator(method: str, n_tasks: int, options: dict[str, float | None]) -> jd.Aggregator:
    """The aggregator of `method`; an option left None takes the method's default. Raises ImportError, naming
    the extra to install, when the method's solver library is missing."""
    m = METHODS[method]
    resolved = {k: options.get(k) if options.get(k) is not None else v for k, v in (m.options or {}).items()}
    try:
        return m.build(n_tasks, resolved)
    except ImportError:
        raise ImportError(f"task_weighting {method} needs {EXTRAS[m.extra or 'solvers']}") from None
