"""DAGMM (Zong et al., ICLR 2018) on adVAE's backbone: the model (``model.py``: compression features,
estimation network, mixture, sample energy, the objective, trained through autograd) and its
hand-written gradients, fused autograd nodes registered on the model as an optional accelerator
(``gradients.py``)."""
from methods.dagmm import gradients  # noqa: F401  (registers the "hand" accelerator)
from methods.dagmm.gradients import CompressionFeatures, MixtureEnergy  # noqa: F401
from methods.dagmm.model import (DAGMM, DEFINITIONS, GRADIENTS, EstimationNet,  # noqa: F401
                                 compression_features, energy, guarded_cholesky,
                                 mixture_from_memberships)
