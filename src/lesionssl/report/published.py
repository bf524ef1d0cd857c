"""Published results that reports show next to ours."""

#: The seed study's published results (Haggerty & Chandra 2023; test n = 19,423).
PUBLISHED = {
    "supervised-imagenet": {"accuracy": 0.6628, "std": 0.0198, "runs": 35},
    "barlow-twins-imagenet": {"accuracy": 0.7031, "std": 0.0142, "runs": 35},
    "pre-pretrained": {"accuracy": 0.7227, "std": 0.0037, "runs": 6},
}
