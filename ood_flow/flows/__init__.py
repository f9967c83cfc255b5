"""Invertible layers and flow models; see :mod:`ood_flow.flows.base` for the contract."""

from ood_flow.flows.base import Bijection, Sequential
from ood_flow.flows.io import load_checkpoint, load_model, save_model
from ood_flow.flows.models import MODELS, Flow, batchnorm_train, create_flow

__all__ = ["Bijection", "Sequential", "Flow", "MODELS", "create_flow", "save_model", "load_model",
           "load_checkpoint", "batchnorm_train"]
