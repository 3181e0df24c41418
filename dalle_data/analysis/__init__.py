"""What a dataset holds, measured from its records and stored embeddings: near-duplicates and diversity.

Both work on the scorer's stored image embeddings (``dalle_data.embeddings``)
and never hold an n×n matrix: near-duplicates are found block by block
(exact cosines, ``BLOCK`` rows at a time), diversity from the D×D covariance
of the embeddings (the Vendi score's eigenvalues) and their sum (the mean
pairwise distance), so both scale to 100,000 images in memory linear in n.
"""

from dalle_data.analysis.diversity import (
    ClassDiversity,
    diversity,
    mean_pairwise_distance,
    vendi_score,
)
from dalle_data.analysis.duplicates import (
    DEFAULT_THRESHOLD,
    DuplicateGroup,
    duplicate_groups,
    near_duplicate_components,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "ClassDiversity",
    "DuplicateGroup",
    "diversity",
    "duplicate_groups",
    "mean_pairwise_distance",
    "near_duplicate_components",
    "vendi_score",
]
