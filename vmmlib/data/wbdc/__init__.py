"""WBDC 2022: the on-disk format (`reader`), zips (`zips`), an opened data folder (`folder`), sample data (`sample`)."""
