"""Data: raw interaction logs in, a prepared data set on disk out, and model inputs from it.

``readers`` parse the usual log formats into one columnar ``InteractionLog``; ``prepare`` applies
the paper's protocol (filters, ids by popularity, user split) and writes a prepared data set,
whose on-disk format is ``dataset``; ``inputs`` turns a prepared split into tf.data training cuts
and evaluation samples. ``synthetic`` writes logs with learnable structure; ``download`` fetches
public data sets. Nothing here imports training or serving.
"""
