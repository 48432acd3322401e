"""The freemask Kubeflow pipeline (built from the container components in ``components``)."""
