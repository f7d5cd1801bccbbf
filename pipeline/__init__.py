"""stylegan3-ray: the pipeline (data, training, tuning, tracking, metrics, generation)."""
