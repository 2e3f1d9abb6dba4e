"""StarDist3D models: where they come from, prediction, cached network output -> instances."""
