"""The ops: forward/backward pairs with hand-written derivatives, one concept per module.

activations  identity, ReLU, LeakyReLU, ELU, tanh, sigmoid, softplus
layers       dense, dense + ReLU (fused), dense + any activation, inverted dropout
reparam      the reparameterized sample and the VAE's latent layer (sample + KL)
losses       the log-densities and the KL per example (each formula written once), the
             losses built on them (Bernoulli / Gaussian NLL, squared error, Gaussian KL)
             and the decoder likelihoods
sparsity     the sparse AE's penalty, the KL of each unit's mean activation from rho
iwae         K draws per example: the importance weights, the IWAE bound and its encoder
             gradient estimators (pathwise, stl, dreg)

Every op is decorated with :func:`scratchvae.backend.op`: it runs its kernel for its arrays
(Numba, CuPy) when there is one, its readable body otherwise.
"""
