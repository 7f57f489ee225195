"""Text + audio + video (seed 004): readers and datasets (`reader`), an opened data folder (`folder`), sample data (`sample`)."""
