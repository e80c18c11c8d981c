"""Text encoder families: ``sentence_transformer``."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .registry import ModelFamily, register_family
from .spec import ModelSpec, bundled_model_path


class SentenceTransformer(ModelFamily):
    """A ``sentence_transformers.SentenceTransformer``.

    Built from a config: a randomly initialised BERT (``config`` holds ``BertConfig`` arguments) with mean pooling,
    using the tokenizer of the bundled model named by ``config.tokenizer`` (default ``all-MiniLM-L6-v2``).
    """

    name = "sentence_transformer"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        from sentence_transformers import SentenceTransformer as Model
        from sentence_transformers import models
        from transformers import BertConfig, BertModel

        tokenizer_dir = bundled_model_path(str(config.get("tokenizer", "all-MiniLM-L6-v2")))
        bert_kwargs = {k: v for k, v in config.items() if k != "tokenizer"}
        transformer = models.Transformer(str(tokenizer_dir), model_args={"local_files_only": True},
                                         tokenizer_args={"local_files_only": True})
        bert = BertModel(BertConfig(vocab_size=transformer.tokenizer.vocab_size, **bert_kwargs))
        # sentence-transformers 6 holds the network in `model` (`auto_model` is a read-only alias of it); 5 in
        # `auto_model`. Setting the alias would only add a module beside the loaded pretrained one.
        alias = isinstance(getattr(type(transformer), "auto_model", None), property)
        setattr(transformer, "model" if alias else "auto_model", bert)
        pooling = models.Pooling(bert.config.hidden_size, pooling_mode="mean")
        return Model(modules=[transformer, pooling], device="cpu")

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        from sentence_transformers import SentenceTransformer as Model

        kwargs = {"local_files_only": local_only}
        return Model(location, device="cpu", model_kwargs=kwargs, processor_kwargs=kwargs,
                     local_files_only=local_only)

    def output_dim(self, module: torch.nn.Module) -> int:
        # sentence-transformers renamed the method; older releases have only the long name
        return int(module.get_embedding_dimension() if hasattr(module, "get_embedding_dimension")
                   else module.get_sentence_embedding_dimension())


register_family(SentenceTransformer())
