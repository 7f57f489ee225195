"""`vmm extract`: videos to per-second backbone features (`run`), the backbone side (`backbone`), the format side (`formats`)."""
