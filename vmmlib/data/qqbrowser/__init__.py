"""QQ Browser 2021 video similarity: the on-disk format (`reader`) and its sample data (`sample`)."""
