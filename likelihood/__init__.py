"""The metadata-conditioned neural likelihood p(x | class, θ, context) (not built yet)."""
