import numpy as np
import pytest
import torch

from multimodal_suite.models.bookbert import (
    BookBERTConfig,
    BookBERTMultimodal2,
    build_page_features,
    classify_sequence,
    window_starts,
)


def tiny_model(max_positions=16, **overrides) -> BookBERTMultimodal2:
    torch.manual_seed(0)
    config = BookBERTConfig(text_dim=3, visual_dim=5, bert_input=16, max_positions=max_positions, num_layers=1,
                            num_heads=2, ff_dim=32, dropout=0.0, **overrides)
    return BookBERTMultimodal2(config).eval()


def test_build_page_features_puts_text_first():
    text = np.full((4, 3), 1.0)
    visual = np.full((4, 5), 2.0)
    features = build_page_features(text, visual)
    assert features.shape == (4, 8)
    assert torch.all(features[:, :3] == 1.0) and torch.all(features[:, 3:] == 2.0)
    with pytest.raises(ValueError, match="different pages"):
        build_page_features(text, visual[:3])


def test_swapped_modalities_cannot_be_fed_to_the_model():
    """The [visual, text] mix-up of the original inference code changes the width and is refused."""
    model = tiny_model()
    text, visual = torch.randn(4, 3), torch.randn(4, 5)
    right = model.forward_sequence(build_page_features(text, visual))
    wrong = model.forward_sequence(torch.cat([visual, text], dim=-1))
    assert not torch.allclose(right, wrong)
    asym = BookBERTMultimodal2(BookBERTConfig(text_dim=3, visual_dim=6, bert_input=16, num_heads=2, num_layers=1,
                                              ff_dim=32))
    with pytest.raises(RuntimeError):
        asym.forward_sequence(build_page_features(torch.randn(4, 6), torch.randn(4, 2)))


def test_batched_padded_forward_matches_single_sequences():
    model = tiny_model()
    a, b = torch.randn(7, 8), torch.randn(4, 8)
    batch = torch.zeros(2, 7, 8)
    batch[0], batch[1, :4] = a, b
    mask = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    logits = model(batch, padding_mask=mask)
    torch.testing.assert_close(logits[0], model.forward_sequence(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1, :4], model.forward_sequence(b), atol=1e-5, rtol=1e-5)


def test_window_starts_cover_every_page_with_full_windows():
    assert window_starts(10, 16, 8) == [0]
    starts = window_starts(600, 512, 256)
    assert starts == [0, 88]
    starts = window_starts(1000, 100, 30)
    covered = np.zeros(1000, dtype=bool)
    for s in starts:
        covered[s : s + 100] = True
        assert s + 100 <= 1000
    assert covered.all()
    with pytest.raises(ValueError):
        window_starts(100, 10, 20)


def test_windowed_classification_equals_unwindowed_for_short_book():
    model = tiny_model(max_positions=16)
    features = torch.randn(12, 8)
    torch.testing.assert_close(classify_sequence(model, features, window=16, stride=8),
                               model.forward_sequence(features))


def test_long_book_is_classified_by_averaging_overlapping_windows():
    model = tiny_model(max_positions=8)
    features = torch.randn(20, 8)
    with pytest.raises(ValueError, match="exceeds max_positions"):
        model.forward_sequence(features)
    logits = classify_sequence(model, features, window=8, stride=4, batch_windows=2)
    assert logits.shape == (20, model.config.num_classes)
    # windows start at 0, 4, 8, 12: pages 4..7 are the mean of windows 0 and 4
    expected = (model.forward_sequence(features[0:8])[4:8] + model.forward_sequence(features[4:12])[0:4]) / 2
    torch.testing.assert_close(logits[4:8], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[:4], model.forward_sequence(features[0:8])[:4], atol=1e-5, rtol=1e-5)


def test_600_page_book_with_512_positions():
    config = BookBERTConfig(text_dim=3, visual_dim=5, bert_input=16, max_positions=512, num_layers=1, num_heads=2,
                            ff_dim=32, dropout=0.0)
    model = BookBERTMultimodal2(config).eval()
    logits = classify_sequence(model, torch.randn(600, 8), window=512, stride=256)
    assert logits.shape == (600, 9) and torch.isfinite(logits).all()


def test_config_round_trip_and_validation():
    config = BookBERTConfig(text_dim=3, visual_dim=5)
    assert BookBERTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown BookBERT config keys"):
        BookBERTConfig.from_dict({**config.to_dict(), "hidden": 3})
    with pytest.raises(ValueError, match="positional"):
        BookBERTConfig(text_dim=3, visual_dim=5, positional="rotary")


def test_batched_classification_of_many_books_equals_one_by_one():
    from multimodal_suite.models.bookbert import classify_sequences

    model = tiny_model(max_positions=16)
    books = [torch.randn(n, 8) for n in (5, 16, 3, 30, 9, 1)]
    batched = classify_sequences(model, books, window=16, stride=8, max_batch_pages=20)
    for book, logits in zip(books, batched):
        torch.testing.assert_close(logits, classify_sequence(model, book, window=16, stride=8), atol=1e-5, rtol=1e-5)
    assert classify_sequences(model, [torch.zeros(0, 8)])[0].shape == (0, 9)
