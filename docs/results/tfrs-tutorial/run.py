"""TFRS's basic retrieval tutorial on MovieLens 100K: softmax (the tutorial), CROLoss swapped in,
and CROLoss with tfcroloss.tfrs.Retrieval and in-batch q; 3 seeds, top-k accuracies.

The tutorial's settings: 80,000 / 20,000 split (shuffle seed 42), StringLookup + Embedding(32)
towers, FactorizedTopK over all 1,682 movies, Adagrad 0.1, batch 8,192, evaluation batch 4,096,
3 epochs. Movie item ids stand in for titles (ids are unique). The seed sets initialisation and
the batch order. Top-k metrics are computed on the test split only (``compute_metrics=not
training``): they do not change training, and on a shared 2-core machine they doubled its time. Run from the repository root:

    .venv/bin/python docs/results/tfrs-tutorial/run.py ../shared/data/ml-100k/ml-100k.inter \
        docs/results/tfrs-tutorial/results.json
"""

import json  # noqa: I001  (tfcroloss before tensorflow: tf.keras is then tf-keras)
import sys
import time

import numpy as np

import tfcroloss
import tfcroloss.tfrs
import tensorflow as tf
import tensorflow_recommenders as tfrs
from tfcroloss.pipelines.provenance import provenance

VARIANTS = ("softmax", "croloss", "croloss_task_q")
SEEDS = (0, 1, 2)


def load(path):
    table = np.loadtxt(path, dtype=str, delimiter="\t", skiprows=1, usecols=(0, 1))
    return tf.data.Dataset.from_tensor_slices({"user_id": table[:, 0], "movie_title": table[:, 1]})


class MovielensModel(tfrs.Model):
    def __init__(self, user_model, movie_model, task, sampling_probability=None):
        super().__init__()
        self.movie_model, self.user_model, self.task = movie_model, user_model, task
        self.sampling_probability = sampling_probability

    def compute_loss(self, features, training=False):
        titles = features["movie_title"]
        user_embeddings, movie_embeddings = self.user_model(features["user_id"]), self.movie_model(titles)
        if self.sampling_probability is None:
            return self.task(user_embeddings, movie_embeddings, compute_metrics=not training)
        return self.task(user_embeddings, movie_embeddings, candidate_ids=titles, compute_metrics=not training,
                         candidate_sampling_probability=self.sampling_probability.lookup(titles))


def run(variant, seed, ratings, movies):
    tf.random.set_seed(42)
    shuffled = ratings.shuffle(100_000, seed=42, reshuffle_each_iteration=False)
    train, test = shuffled.take(80_000), shuffled.skip(80_000).take(20_000)
    unique_titles = np.unique(np.concatenate(list(movies.batch(1_000))))
    unique_users = np.unique(np.concatenate(list(ratings.batch(1_000_000).map(lambda x: x["user_id"]))))
    tf.keras.utils.set_random_seed(seed)
    user_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=unique_users, mask_token=None),
                                      tf.keras.layers.Embedding(len(unique_users) + 1, 32)])
    movie_model = tf.keras.Sequential([tf.keras.layers.StringLookup(vocabulary=unique_titles, mask_token=None),
                                       tf.keras.layers.Embedding(len(unique_titles) + 1, 32)])
    index = movies.batch(128).map(movie_model)
    loss = tfcroloss.CROLoss(num_items=len(unique_titles), alpha=1.0, kernel="softplus",
                             reduction=tf.keras.losses.Reduction.SUM)
    probability = None
    if variant == "softmax":
        task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=index))
    elif variant == "croloss":
        task = tfrs.tasks.Retrieval(loss=loss, metrics=tfrs.metrics.FactorizedTopK(candidates=index))
    else:
        train_titles = np.concatenate(list(train.map(lambda x: x["movie_title"]).batch(100_000)))
        seen, counts = np.unique(train_titles, return_counts=True)
        probability = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(seen, (counts / counts.sum()).astype("float32")), 1e-6)
        task = tfcroloss.tfrs.Retrieval(
            loss=loss, remove_accidental_hits=True,
            metrics=tfrs.metrics.FactorizedTopK(candidates=movies.batch(128).map(lambda t: (t, movie_model(t)))))
    model = MovielensModel(user_model, movie_model, task, probability)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    model.fit(train.shuffle(100_000, seed=seed).batch(8192).cache(), epochs=3, verbose=0)
    result = model.evaluate(test.batch(4096).cache(), return_dict=True, verbose=0)
    return {k.split("/")[-1].replace("_categorical_accuracy", ""): round(float(v), 5)
            for k, v in result.items() if k.startswith("factorized_top_k")}


def main(data, out):
    ratings = load(data)
    movies = ratings.map(lambda x: x["movie_title"]).unique()
    results = {"provenance": provenance(), "runs": []}  # the commit, package versions and machine
    for seed in SEEDS:
        for variant in VARIANTS:
            start = time.time()
            results["runs"].append({"variant": variant, "seed": seed, **run(variant, seed, ratings, movies),
                                    "seconds": round(time.time() - start)})
            print(results["runs"][-1], flush=True)
            with open(out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
