"""Model builders: the course's deep MLPs and demo networks, and the robust baselines."""

from gradhealth.models.mlp import DEMO_NETWORKS, classification_loss, deep_mlp, demo_network
from gradhealth.models.robust import robust_cnn, robust_mlp, robust_optimizer

__all__ = ["DEMO_NETWORKS", "classification_loss", "deep_mlp", "demo_network", "robust_cnn",
           "robust_mlp", "robust_optimizer"]
