"""adVAE (Wang et al., KBS 2020): the model (``model.py``: losses term by term, the Gaussian
transformer, the parameters), how it trains and its runs stack (``training.py``) and its hand-written gradients, an
optional accelerator registered on the model (``gradients.py``)."""
from methods.advae import gradients  # noqa: F401  (registers the "hand" accelerator)
from methods.advae.model import (DEFINITIONS, GRADIENTS, AdVAE, GaussianTransformer, Latents,  # noqa: F401
                                 hinge, kl2, kl_divergence, mse)
