"""SITS-Former on tiny series: masks, day-of-year codes, pretraining, encoder transfer."""

import pytest
import torch

from spectral_training.models.sits_former import SITSFormer, SITSFormerPretrain, load_pretrained_encoder

SIZES = dict(img_size=8, patch_size=4, in_channels=5, embed_dim=32, num_layers=2, num_heads=4, max_seq_len=6,
             band_group_size=2)


def series(b=2, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 5, 8, 8, generator=g)
    doy = torch.tensor([[10, 40, 80, 120, 0, 0], [5, 50, 100, 150, 200, 250]])[:b, :t]
    return x, doy, doy > 0


def classifier(**kw):
    torch.manual_seed(0)
    return SITSFormer(num_classes=3, **{**SIZES, **kw}).eval()


def test_variable_length_series_with_masks_give_finite_logits_and_attention_only_on_real_dates():
    x, doy, mask = series()
    logits = classifier()(x, doy, mask)
    _, attention = classifier().forward_features(x, doy, mask, return_attention=True)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert attention.shape == (2, 2, 6) and torch.all(attention[0, :, 4:] == 0)


def test_changing_a_masked_date_does_not_change_the_output():
    x, doy, mask = series()
    model = classifier()
    x2, doy2 = x.clone(), doy.clone()
    x2[0, 4:] = torch.randn_like(x2[0, 4:]) * 100
    doy2[0, 4:] = 300
    assert torch.allclose(model(x, doy, mask), model(x2, doy2, mask), atol=1e-5)


def test_day_of_year_encoding_differs_from_index_encoding():
    x, doy, mask = series()
    shifted = torch.where(mask, doy + 60, doy)  # same order and indices, other days of the year
    by_day, by_index = classifier(), classifier(temporal_encoding="index")
    assert not torch.allclose(by_day(x, doy, mask), by_day(x, shifted, mask), atol=1e-4)
    assert torch.allclose(by_index(x, doy, mask), by_index(x, shifted, mask), atol=1e-6)


def test_pretraining_loss_falls():
    torch.manual_seed(0)
    model = SITSFormerPretrain(mask_ratio=0.4, **{**SIZES, "dropout": 0.0})
    x, doy, mask = series()
    valid = torch.rand(2, 6, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.2
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)  # the same hidden blocks every step, so the losses compare
        loss = model(x, doy, mask, valid)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_finetuning_loads_the_pretrained_encoder_with_only_the_head_missing():
    pretrain = SITSFormerPretrain(**SIZES)
    model = classifier()
    load_pretrained_encoder(model, pretrain.state_dict())
    assert torch.equal(model.embed.proj.weight, pretrain.encoder.embed.proj.weight)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained_encoder(classifier(embed_dim=64), pretrain.state_dict())
