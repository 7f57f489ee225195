"""MUGE text-image retrieval: readers and datasets (`reader`), `vmm prepare muge` (`prepare`), the online-learning image cache (`online_cache`), sample data (`sample`)."""
