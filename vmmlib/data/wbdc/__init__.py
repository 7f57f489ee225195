"""WBDC 2022: the on-disk format (`reader`), zips (`zips`), categories (`categories`), an opened data folder (`folder`), sample data (`sample`)."""
