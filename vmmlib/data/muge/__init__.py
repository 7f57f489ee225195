"""MUGE text-image retrieval: readers and datasets (`reader`), `vmm prepare muge` (`prepare`), sample data (`sample`)."""
