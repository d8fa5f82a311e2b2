"""The shared deep training engine the method files import: networks stacked over seeds and the
width rule for new data (``backbone``), seed stacks, the mini-batch feeder and the L-sample scorer
(``stacked``), StackAdam and the arithmetic whose result does not depend on the stack size
(``invariant``), and the label-free discriminator scores of GAN, WGAN-GP and MO-GAAL
(``discriminator_scores``).

Nothing here registers a method; ``methods/`` defines them.
"""
