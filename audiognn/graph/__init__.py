"""Graph operators of LHGNN (Singh, Benetos, Phan, Stowell, *LHGNN: Local-Higher Order Graph Neural Networks for
Audio Classification and Tagging*): dilated k-NN, clustering (FCM, k-means, mean shift), LHG conv."""

from audiognn.graph.cluster_init import init_centroids, squared_distance
from audiognn.graph.density import MeanShift, mean_shift
from audiognn.graph.fuzzy_cmeans import FuzzyCMeans, fuzzy_c_means
from audiognn.graph.kmeans import KMeans, kmeans
from audiognn.graph.knn import dense_dilated_knn, pool_keys
from audiognn.graph.lhg_conv import LHGConv
from audiognn.graph.max_gather import max_gather
from audiognn.graph.relative_pos import RelativePositionCache, relative_position

__all__ = [
    "FuzzyCMeans",
    "KMeans",
    "LHGConv",
    "MeanShift",
    "RelativePositionCache",
    "dense_dilated_knn",
    "fuzzy_c_means",
    "init_centroids",
    "kmeans",
    "max_gather",
    "mean_shift",
    "pool_keys",
    "relative_position",
    "squared_distance",
]
