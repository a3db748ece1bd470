"""The metadata-conditioned neural likelihood p(x | class, θ, context), and its training."""
