"""The face: the `vmm` command (`cli`), pipelines of notebooks, reports, the run index, comparison and tracking."""
