"""Prediction: the one inference loop (`loop`), faster backends (`backends`), online adaptation at prediction time (`online`)."""
