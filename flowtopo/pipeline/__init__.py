"""After training: pick the best priors, match latent spaces pairwise, report."""
