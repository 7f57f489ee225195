"""YouTube-8M: the record format (`reader`), items and datasets (`datasets`), an opened data folder (`folder`), sample data (`sample`)."""
