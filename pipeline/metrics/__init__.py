"""Quality and equivariance metrics (spec §f)."""
