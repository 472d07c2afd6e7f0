"""napari widgets (Qt).  Each action calls a plain function or method that also works without a viewer."""
