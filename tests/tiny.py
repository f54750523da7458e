"""Shared tiny network configs for fast tests (official ADM constructor kwargs)."""

#: A 2-level ADM UNet with attention and resblock up/down: milliseconds per call on one CPU thread.
TINY_ADM = {
    "image_size": 8, "in_channels": 3, "model_channels": 32, "out_channels": 3, "num_res_blocks": 1,
    "attention_resolutions": [2], "channel_mult": [1, 2], "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": True,
}
