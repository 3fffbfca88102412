"""Reranking: score (query, document) pairs with a rerank model, through the scheduler."""
