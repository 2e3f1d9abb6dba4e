"""napari dock widgets: thin, one file per widget."""
