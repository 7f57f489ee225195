"""Prediction: the one inference loop (`loop`), faster backends (`backends`), online adaptation at prediction time (`online`),
the avfusion models' retrieval and QA prediction (`avfusion`)."""
