"""Deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning", CVPR): the student and K−1
trainable peers learn together, each from the labels and from the others' softened outputs.

Objective (term ``dml``), for every net k among the K = 1 + ``method.peers`` nets::

    L_k = CE(z_k, y) + 1/(K−1) · Σ_{l≠k} KL(softmax(sg(z_l)/T) ‖ softmax(z_k/T)) · T²

summed over k and minimised in one backward pass. ``sg`` (stop-gradient) makes each KL term train
only net k, as in the paper's per-net updates; the paper updates the nets one after another within
a step, we update them together from the same forward pass (the simultaneous variant most
toolkits use). T = ``method.dml_T`` (1 in the paper, where the KL uses plain softmax). Peers use
``method.peer_model`` (default: the student's architecture), each with its own initialisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightship.methods.kd import kd_loss
from lightship.methods.supervised import smoothed_ce


def mutual_kl(logits: list[Tensor], T: float) -> list[Tensor]:
    """For each net k: the mean over l ≠ k of KL(p_l ‖ p_k)·T², the others detached."""
    out = []
    for k, z_k in enumerate(logits):
        others = [kd_loss(z_k, z_l.detach(), T) for l, z_l in enumerate(logits) if l != k]
        out.append(sum(others) / len(others))
    return out


class Mutual:
    """The peers and their terms (composed into the transfer objective)."""

    def __init__(self, peers: list[nn.Module], T: float, label_smoothing: float = 0.0) -> None:
        self.peers = nn.ModuleList(peers)
        self.T, self.label_smoothing = T, label_smoothing

    def terms(self, z_student: Tensor, x: Tensor, target: Tensor
              ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(student's mutual term, the peers' total loss, logged terms)."""
        z_peers = [p(x).float() for p in self.peers]
        kls = mutual_kl([z_student.float(), *z_peers], self.T)
        peer_ce = [smoothed_ce(z, target, self.label_smoothing)
                   for z in z_peers]
        peers_total = sum(ce + kl for ce, kl in zip(peer_ce, kls[1:], strict=True))
        logged = {"dml": kls[0].detach(),
                  "peer_ce": (sum(peer_ce) / len(peer_ce)).detach()}
        return kls[0], peers_total, logged
