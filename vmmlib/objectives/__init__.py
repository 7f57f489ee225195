"""Pretraining objectives that need a model's internals (masked inputs, several passes, extra heads).

Each objective returns raw, unweighted named terms (`{"mlm": t, "mfm": t, ...}`); the caller applies
the weights in one place (`vmmlib.losses.objective_weights`) and `fit` logs every term.

- `video_text`: WBDC rank-8 single-stream pretraining (MLM, MFM, frame–text matching, inverse cloze,
  mask-modality) and ActionCLIP-style video–text contrastive pretraining (SPEC §4.4, §3.10).
- `avfusion`: the text + audio + video fusion model's pretraining tasks (seed 004, SPEC §3.11, §9.3).
"""
