"""The lab: what the libraries people learn from do not show.

estimators  the ELBO's gradient by the pathwise and the score-function estimators
baselines   the score function's baselines (none, leave-one-out, running mean)
study       their bias and variance against the number of samples
snr         the signal-to-noise ratio of the IWAE gradient's estimators against k
trace       one real training step, op by op, with numerical checks on the spot
            (trace_cli: the ``scratchvae trace`` command)
impute      filling in missing pixels with a trained VAE; denoising
"""
