"""Models: packed networks, likelihoods, priors, divergences and the objective."""
