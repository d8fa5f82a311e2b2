"""WGAN-GP (Gulrajani et al., NIPS 2017) on adVAE's backbone: the model (``model.py``: the losses with
the gradient penalty, the networks, the parameters, the training loop through autograd) and its
hand-written gradients, an optional accelerator registered on the model (``gradients.py``)."""
from methods.wgan_gp import gradients  # noqa: F401  (registers the "hand" accelerator)
from methods.wgan_gp.gradients import _layers, _mlp, _mlp_backward, critic_step, generator_step  # noqa: F401
from methods.wgan_gp.model import (DEFINITIONS, GRADIENTS, WGANGP, gradient_penalty,  # noqa: F401
                                   interpolates)
