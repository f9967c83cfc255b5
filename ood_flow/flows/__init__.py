"""Invertible layers and flow models; see :mod:`ood_flow.flows.base` for the contract.

The registries name what a user chooses: :data:`MODELS` (families), :data:`IMAGE_MASKS` (RealNVP's
coupling masks) and :data:`IMAGE_NETS` (st-network families of the image models).
"""

from ood_flow.flows.base import Bijection, Sequential
from ood_flow.flows.configs import IMAGE_MASKS, IMAGE_NETS
from ood_flow.flows.io import load_checkpoint, load_model, save_model
from ood_flow.flows.models import MODELS, Flow, batchnorm_train, create_flow

__all__ = ["Bijection", "Sequential", "Flow", "IMAGE_MASKS", "IMAGE_NETS", "MODELS", "create_flow", "save_model",
           "load_model", "load_checkpoint", "batchnorm_train"]
